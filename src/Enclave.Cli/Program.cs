using System.CommandLine;
using Enclave.Cli.Commands;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;
using Enclave.Engine.Templates;
using Enclave.Engine.Tokenization;

var root = new RootCommand("Enclave: run DeepSeek-family language models inside your own network")
{
    RunCommand.Create(),
    ChatCommand.Create(),
    TokenizeCommand.Create(),
    RenderCommand.Create(),
    QuantizeCommand.Create(),
    EmbedCommand.Create(),
    BenchCommand.Create([Enclave.Server.Cli.BenchServeCommand.Create(), BenchEmbedCommand.Create(), BenchVectorsCommand.Create()]),
    Enclave.Server.Cli.ServeCommand.Create(StoreModels.ConfigureServe),
    InstallCommand.Create(),
    Enclave.Knowledge.Cli.KbCommand.Create(new Enclave.Knowledge.Vectors.VectorIndexFactory(), new Enclave.Knowledge.Retrieval.EncoderEmbeddingProvider()),
};
foreach (var command in Enclave.Gateway.Cli.GatewayCommands.Create())
{
    root.Subcommands.Add(command);
}

foreach (var command in Enclave.Operations.Cli.OperationsCommands.Create())
{
    root.Subcommands.Add(command);
}

try
{
    // Errors the user can fix print as one line; anything else keeps its stack trace.
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is CliException or CheckpointFormatException or ModelConfigException or TemplateException or InvalidDataException or NotSupportedException or ArgumentException or IOException
    or FormatException or System.Security.Cryptography.CryptographicException)
{
    Console.Error.WriteLine($"enclave: {e.Message}");
    return 2;
}
