using System.CommandLine;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;

namespace Enclave.Cli.Commands;

/// <summary><c>enclave run</c>: one completion streamed to stdout (or one JSON object with --json).</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text (a user message unless --raw)" };
        var promptFile = new Option<FileInfo?>("--prompt-file") { Description = "Read the prompt from a UTF-8 file" };
        var raw = new Option<bool>("--raw") { Description = "Tokenize the prompt as is instead of rendering it as a user message through the chat template" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 256 };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature (0 = greedy; default from generation_config.json, else greedy)" };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling mass" };
        var topK = new Option<int?>("--top-k") { Description = "Sample among the K most likely tokens" };
        var seed = new Option<long?>("--seed") { Description = "Random seed: same seed, same output" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object {prompt_ids, completion_ids, text, finish_reason} instead of streaming" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var enforceEager = CommonOptions.EnforceEager();
        var command = new Command("run", "Generate a completion for one prompt")
        {
            model, prompt, promptFile, raw, maxTokens, temperature, topP, topK, seed, json, device, threads, enforceEager,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var text = result.GetValue(prompt);
            var file = result.GetValue(promptFile);
            if ((text is null) == (file is null))
            {
                throw new CliException("give exactly one of --prompt or --prompt-file");
            }

            text ??= await File.ReadAllTextAsync(file!.FullName, Encoding.UTF8, cancellationToken);
            CommonOptions.DataDirectory();
            using var lm = ModelLoader.Load(result.GetRequiredValue(model), result.GetValue(device)!, result.GetValue(threads), new EngineOptions(), enforceEager: result.GetValue(enforceEager));
            int[] promptIds;
            if (result.GetValue(raw))
            {
                promptIds = lm.Tokenizer.Encode(text, addSpecialTokens: true);
            }
            else
            {
                promptIds = lm.EncodeChat(new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }));
            }

            var parameters = ModelLoader.SamplingDefaults(lm) with
            {
                MaxTokens = result.GetValue(maxTokens),
            };
            parameters = parameters with
            {
                Temperature = result.GetValue(temperature) ?? parameters.Temperature,
                TopP = result.GetValue(topP) ?? parameters.TopP,
                TopK = result.GetValue(topK) ?? parameters.TopK,
                Seed = result.GetValue(seed),
            };
            var completion = new List<int>();
            var output = new StringBuilder();
            FinishReason? finish = null;
            var asJson = result.GetValue(json);
            var stdout = Console.Out;
            await foreach (var chunk in lm.GenerateAsync(promptIds, parameters, cancellationToken))
            {
                completion.Add(chunk.TokenId);
                finish = chunk.Finish ?? finish;
                if (asJson)
                {
                    output.Append(chunk.Text);
                }
                else
                {
                    await stdout.WriteAsync(chunk.Text);
                    await stdout.FlushAsync(cancellationToken);
                }
            }

            if (asJson)
            {
                var obj = new JsonObject
                {
                    ["prompt_ids"] = new JsonArray([.. promptIds.Select(i => (JsonNode)i)]),
                    ["completion_ids"] = new JsonArray([.. completion.Select(i => (JsonNode)i)]),
                    ["text"] = output.ToString(),
                    ["finish_reason"] = finish?.ToString().ToLowerInvariant() ?? "abort",
                };
                await stdout.WriteLineAsync(obj.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            }
            else
            {
                await stdout.WriteLineAsync();
            }

            return 0;
        });
        return command;
    }
}
