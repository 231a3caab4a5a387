using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Templates;
using Enclave.Engine.Tokenization;

namespace Enclave.Cli.Commands;

/// <summary><c>enclave render</c>: the chat template's rendering of an OpenAI-style messages array, byte-exact.</summary>
internal static class RenderCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var messages = new Option<FileInfo>("--messages") { Description = "JSON file holding an array of {role, content} messages", Required = true };
        var noGeneration = new Option<bool>("--no-generation-prompt") { Description = "Do not append the assistant turn opener" };
        var command = new Command("render", "Render messages through the model's chat template") { model, messages, noGeneration };
        command.SetAction(async (result, cancellationToken) =>
        {
            var file = result.GetRequiredValue(messages);
            JsonArray array;
            try
            {
                array = JsonNode.Parse(await File.ReadAllTextAsync(file.FullName, cancellationToken)) as JsonArray
                        ?? throw new CliException($"{file.FullName}: expected a JSON array of messages");
            }
            catch (JsonException e)
            {
                throw new CliException($"{file.FullName}: not valid JSON ({e.Message})");
            }
            catch (FileNotFoundException)
            {
                throw new CliException($"{file.FullName}: file not found");
            }

            var config = TokenizerConfig.Load(result.GetRequiredValue(model));
            if (config.ChatTemplate is null)
            {
                throw new CliException($"{result.GetRequiredValue(model)}: no chat template (neither tokenizer_config.json's chat_template nor chat_template.jinja)");
            }

            var template = new ChatTemplate(config.ChatTemplate, config.SpecialTokensMap);
            var rendered = template.Render(array, !result.GetValue(noGeneration));
            var stdout = Console.OpenStandardOutput();
            var bytes = System.Text.Encoding.UTF8.GetBytes(rendered);
            await stdout.WriteAsync(bytes, cancellationToken);
            await stdout.FlushAsync(cancellationToken);
            return 0;
        });
        return command;
    }
}
