using System.CommandLine;
using Enclave.Server.Bench;

namespace Enclave.Server.Cli;

/// <summary><c>enclave bench serve</c>: load-test any OpenAI-compatible endpoint (vLLM benchmark_serving style).</summary>
public static class BenchServeCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Base URL of the server", DefaultValueFactory = _ => "http://127.0.0.1:8000" };
        var model = new Option<string?>("--model") { Description = "Model name (default: the first one /v1/models lists)" };
        var concurrency = new Option<int>("--concurrency", "-c") { Description = "Requests in flight at once", DefaultValueFactory = _ => 8 };
        var requests = new Option<int>("--requests", "-n") { Description = "Requests to send in all", DefaultValueFactory = _ => 64 };
        var inputLen = new Option<int>("--input-len") { Description = "Prompt tokens per request (random token ids)", DefaultValueFactory = _ => 128 };
        var outputLen = new Option<int>("--output-len") { Description = "Generated tokens per request (ignore_eos)", DefaultValueFactory = _ => 128 };
        var apiKey = new Option<string?>("--api-key") { Description = "Bearer key (default: ENCLAVE_API_KEY)" };
        var seed = new Option<int>("--seed") { Description = "Seed of the random prompts", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of the table" };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature of every request (0: greedy, the default)", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "top_p of sampled requests (needs --temperature > 0)", DefaultValueFactory = _ => 1.0 };
        var topK = new Option<int>("--top-k") { Description = "top_k of sampled requests, 0 for none (needs --temperature > 0)", DefaultValueFactory = _ => 0 };
        var minP = new Option<double>("--min-p") { Description = "min_p of sampled requests (needs --temperature > 0)", DefaultValueFactory = _ => 0 };
        var samplingSeed = new Option<long?>("--sampling-seed") { Description = "Seed of sampled requests: request i gets seed N + i (default: none)" };
        var command = new Command("serve", "Benchmark an OpenAI-compatible server: throughput, TTFT, TPOT, ITL and end-to-end latency")
        {
            url, model, concurrency, requests, inputLen, outputLen, apiKey, seed, json, temperature, topP, topK, minP, samplingSeed,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var baseUrl = result.GetValue(url)!;
            var options = new ServeBenchmarkOptions(new Uri(baseUrl.EndsWith('/') ? baseUrl : baseUrl + "/"),
                result.GetValue(concurrency), result.GetValue(requests), result.GetValue(inputLen), result.GetValue(outputLen))
            {
                Model = result.GetValue(model),
                ApiKey = result.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("ENCLAVE_API_KEY"),
                Seed = result.GetValue(seed),
                Temperature = result.GetValue(temperature),
                TopP = result.GetValue(topP),
                TopK = result.GetValue(topK),
                MinP = result.GetValue(minP),
                SamplingSeed = result.GetValue(samplingSeed),
            };
            if (options.Temperature < 0 || options.TopP is <= 0 or > 1 || options.TopK < 0 || options.MinP is < 0 or > 1)
            {
                throw new ArgumentException("--temperature must be ≥ 0, --top-p in (0, 1], --top-k ≥ 0 and --min-p in [0, 1]");
            }
            var r = await ServeBenchmark.RunAsync(options, cancellationToken);
            Console.WriteLine(result.GetValue(json) ? r.ToJson().ToJsonString() : r.Format());
            foreach (var e in r.Errors.Take(5))
            {
                await Console.Error.WriteLineAsync("error: " + e);
            }

            return r.Failed == 0 ? 0 : 1;
        });
        return command;
    }
}
