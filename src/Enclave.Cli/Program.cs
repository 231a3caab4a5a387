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
    BenchCommand.Create([Enclave.Server.Cli.BenchServeCommand.Create()]),
    Enclave.Server.Cli.ServeCommand.Create(),
};
foreach (var command in Enclave.Gateway.Cli.GatewayCommands.Create())
{
    root.Subcommands.Add(command);
}

try
{
    // Errors the user can fix print as one line; anything else keeps its stack trace.
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is CliException or CheckpointFormatException or ModelConfigException or TemplateException or InvalidDataException or NotSupportedException or ArgumentException or IOException)
{
    Console.Error.WriteLine($"enclave: {e.Message}");
    return 2;
}
