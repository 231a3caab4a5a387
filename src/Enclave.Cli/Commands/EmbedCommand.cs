using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Enclave.Engine.Embeddings;

namespace Enclave.Cli.Commands;

/// <summary><c>enclave embed</c>: embeds texts with an embedding model and prints the vectors.</summary>
internal static class EmbedCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Embedding model directory (BertModel or XLMRobertaModel with tokenizer.json)", Required = true };
        var json = new Option<bool>("--json") { Description = "Print {\"model\",\"dimensions\",\"prompt_tokens\",\"truncated\",\"data\":[{\"text\",\"embedding\"}]}" };
        var dimensions = new Option<int?>("--dimensions") { Description = "Shorten to this many dimensions (Matryoshka models only)" };
        var texts = new Argument<string[]>("text") { Description = "Texts to embed (one vector each)", Arity = ArgumentArity.OneOrMore };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("embed", "Print the embedding vector of each text") { model, json, dimensions, device, threads, texts };
        command.SetAction(async (result, cancellationToken) =>
        {
            var inputs = result.GetRequiredValue(texts);
            using var backend = EncoderBackend.Create(result.GetValue(device)!, result.GetValue(threads));
            using var embedder = EncoderModel.Load(result.GetRequiredValue(model), backend);
            var batch = await embedder.EmbedAsync(inputs, result.GetValue(dimensions), cancellationToken);
            if (batch.TruncatedInputs > 0)
            {
                await Console.Error.WriteLineAsync($"enclave: {batch.TruncatedInputs} of {inputs.Length} texts were longer than {embedder.MaxInputTokens} tokens and were truncated");
            }

            if (result.GetValue(json))
            {
                using var stdout = Console.OpenStandardOutput();
                await using var writer = new Utf8JsonWriter(stdout, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
                writer.WriteStartObject();
                writer.WriteString("model", embedder.Name);
                writer.WriteNumber("dimensions", batch.Vectors[0].Length);
                writer.WriteNumber("prompt_tokens", batch.PromptTokens);
                writer.WriteNumber("truncated", batch.TruncatedInputs);
                writer.WriteStartArray("data");
                for (var i = 0; i < inputs.Length; i++)
                {
                    writer.WriteStartObject();
                    writer.WriteString("text", inputs[i]);
                    writer.WriteStartArray("embedding");
                    foreach (var v in batch.Vectors[i])
                    {
                        writer.WriteNumberValue(v);
                    }

                    writer.WriteEndArray();
                    writer.WriteEndObject();
                }

                writer.WriteEndArray();
                writer.WriteEndObject();
                await writer.FlushAsync(cancellationToken);
                await stdout.WriteAsync("\n"u8.ToArray(), cancellationToken);
                return 0;
            }

            // One line per text: the values separated by spaces, in round-trip precision.
            foreach (var vector in batch.Vectors)
            {
                await Console.Out.WriteLineAsync(string.Join(' ', vector.Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
            }

            return 0;
        });
        return command;
    }
}
