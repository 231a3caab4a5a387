using System.CommandLine;
using System.Text;
using Enclave.Engine.Tokenization;

namespace Enclave.Cli.Commands;

/// <summary><c>enclave tokenize</c>: prints token ids as a JSON array; needs only tokenizer.json (+ tokenizer_config.json).</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var addSpecial = new Option<bool>("--add-special-tokens") { Description = "Add BOS/EOS as the tokenizer's post-processor says" };
        var text = new Argument<string>("text") { Description = "Text to tokenize, or - to read UTF-8 from stdin" };
        var command = new Command("tokenize", "Print the token ids of a text") { model, addSpecial, text };
        command.SetAction(async (result, cancellationToken) =>
        {
            var dir = result.GetRequiredValue(model);
            var input = result.GetRequiredValue(text);
            if (input == "-")
            {
                using var reader = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false, true));
                input = await reader.ReadToEndAsync(cancellationToken);
            }

            var tokenizer = HfTokenizer.FromDirectory(dir);
            var ids = tokenizer.Encode(input, result.GetValue(addSpecial));
            await Console.Out.WriteLineAsync("[" + string.Join(",", ids) + "]");
            return 0;
        });
        return command;
    }
}
