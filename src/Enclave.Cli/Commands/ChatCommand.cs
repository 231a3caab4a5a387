using System.CommandLine;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Engine.Generation;

namespace Enclave.Cli.Commands;

/// <summary><c>enclave chat</c>: interactive multi-turn chat through the model's template. An empty line or /exit ends it.</summary>
internal static class ChatCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens per answer", DefaultValueFactory = _ => 1024 };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature (default from generation_config.json)" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var enforceEager = CommonOptions.EnforceEager();
        var command = new Command("chat", "Chat with a model in the terminal") { model, system, maxTokens, temperature, device, threads, enforceEager };
        command.SetAction(async (result, cancellationToken) =>
        {
            CommonOptions.DataDirectory();
            using var lm = ModelLoader.Load(result.GetRequiredValue(model), result.GetValue(device)!, result.GetValue(threads), new EngineOptions(), enforceEager: result.GetValue(enforceEager));
            var messages = new JsonArray();
            if (result.GetValue(system) is { } s)
            {
                messages.Add(new JsonObject { ["role"] = "system", ["content"] = s });
            }

            var parameters = ModelLoader.SamplingDefaults(lm) with { MaxTokens = result.GetValue(maxTokens) };
            if (result.GetValue(temperature) is { } t)
            {
                parameters = parameters with { Temperature = t };
            }

            Console.Error.WriteLine($"{lm.Name} ready; empty line or /exit quits.");
            while (!cancellationToken.IsCancellationRequested)
            {
                Console.Error.Write("> ");
                var line = await Console.In.ReadLineAsync(cancellationToken);
                if (string.IsNullOrWhiteSpace(line) || line.Trim() == "/exit")
                {
                    break;
                }

                messages.Add(new JsonObject { ["role"] = "user", ["content"] = line });
                var ids = lm.EncodeChat(messages);
                if (ids.Length + parameters.MaxTokens > lm.Engine.MaxModelLen)
                {
                    Console.Error.WriteLine($"the conversation no longer fits the context ({lm.Engine.MaxModelLen} tokens); start a new chat");
                    break;
                }

                var answer = new StringBuilder();
                await foreach (var chunk in lm.GenerateAsync(ids, parameters, cancellationToken))
                {
                    answer.Append(chunk.Text);
                    Console.Write(chunk.Text);
                }

                Console.WriteLine();
                messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = answer.ToString() });
            }

            return 0;
        });
        return command;
    }
}
