using System.CommandLine;
using Enclave.Engine.Generation;
using Enclave.Server.Hosting;

namespace Enclave.Server.Cli;

/// <summary><c>enclave serve</c>: the OpenAI-compatible HTTP server over one or more models.</summary>
public static class ServeCommand
{
    /// <param name="configure">Applied to the options before they are validated (the host adds what the server itself does not know).</param>
    public static Command Create(Action<ServerOptions>? configure = null)
    {
        var model = new Option<string[]>("--model", "-m")
        {
            Description = "Generative model to serve as [NAME=]DIR (repeatable); NAME defaults to the folder name",
            AllowMultipleArgumentsPerToken = false,
        };
        var embeddingModel = new Option<string[]>("--embedding-model")
        {
            Description = "Embedding model (BertModel, XLMRobertaModel) for /v1/embeddings as [NAME=]DIR (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var rerankModel = new Option<string[]>("--rerank-model")
        {
            Description = "Cross-encoder reranker (XLMRobertaForSequenceClassification) for /v1/rerank as [NAME=]DIR (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var maxBatchTokens = new Option<int>("--encoder-max-batch-tokens") { Description = "Most tokens in one embedding/rerank forward pass (bounds its memory)", DefaultValueFactory = _ => 8192 };
        var host = new Option<string>("--host") { Description = "Address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on (0 picks a free one)", DefaultValueFactory = _ => 8000 };
        var apiKey = new Option<string?>("--api-key") { Description = "One static key instead of the gateway: require Authorization: Bearer KEY on /v1, /tokenize and /detokenize (default: ENCLAVE_API_KEY)" };
        var noAuth = new Option<bool>("--no-auth") { Description = "No authentication (calls are audited as 'anonymous'); only allowed with a loopback --host" };
        var redis = new Option<string?>("--redis") { Description = "Redis connection string (host:port[,password=...]) shared by gateway replicas for rate limits, budgets and revocation" };
        var database = new Option<string?>("--database") { Description = "Gateway store: PostgreSQL (Host=... or postgres://) or SQLite connection string (default: SQLite under ENCLAVE_HOME)" };
        var device = new Option<string>("--device") { Description = "auto (CUDA when a usable GPU is found, else CPU), cpu, cuda[:N], or reference (slow scalar yardstick)", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "CPU worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var enforceEager = new Option<bool>("--enforce-eager") { Description = "On CUDA, launch every decode step op by op instead of replaying it as a recorded CUDA graph (slower; for debugging)" };
        var maxNumSeqs = new Option<int>("--max-num-seqs") { Description = "Most sequences in one engine step", DefaultValueFactory = _ => 64 };
        var maxBatched = new Option<int>("--max-num-batched-tokens") { Description = "Token budget of one step (long prompts are prefilled in chunks)", DefaultValueFactory = _ => 512 };
        var kvDtype = new Option<string>("--kv-cache-dtype") { Description = "KV cache element type: auto (f32), f32, or bf16 (CUDA: half the memory and half the bytes attention reads)", DefaultValueFactory = _ => "auto" };
        var kvMemory = new Option<long>("--kv-cache-memory") { Description = "Bytes for the paged KV cache (0 sizes it from the context length)", DefaultValueFactory = _ => 0 };
        var gpuMemory = new Option<double>("--gpu-memory-utilization")
        {
            Description = "Fraction of GPU memory to fill; without --kv-cache-memory the KV cache takes what weights and activations leave",
            DefaultValueFactory = _ => 0.9,
        };
        var maxWaiting = new Option<int>("--max-waiting") { Description = "Requests allowed to wait before new ones get 429", DefaultValueFactory = _ => 256 };
        var maxModelLen = new Option<int>("--max-model-len") { Description = "Context length limit (0 = the model's)", DefaultValueFactory = _ => 0 };
        var noPrefixCaching = new Option<bool>("--no-enable-prefix-caching") { Description = "Turn off automatic prefix caching" };
        var plainLogs = new Option<bool>("--plain-logs") { Description = "Human-readable log lines instead of JSON" };
        var dummy = new Option<bool>("--dummy-weights") { Description = "Random weights from config.json (load tests without a checkpoint)" };
        var otlpEndpoint = new Option<string?>("--otlp-endpoint") { Description = "Send request traces to this OTLP collector, e.g. http://otel-collector:4317 (default: Enclave:Telemetry:OtlpEndpoint, then OTEL_EXPORTER_OTLP_ENDPOINT; none: no tracing)" };
        var upstream = new Option<string?>("--upstream") { Description = "Gateway only: load no model, forward authorised /v1 calls to this engine server (started with --api-key), e.g. http://enclave-engine:8000" };
        var upstreamKey = new Option<string?>("--upstream-api-key") { Description = "The engine's static key sent upstream (default: ENCLAVE_UPSTREAM_API_KEY)" };
        var otlpProtocol = new Option<string>("--otlp-protocol") { Description = "grpc (port 4317) or http/protobuf (port 4318)", DefaultValueFactory = _ => "grpc" };
        var command = new Command("serve", "Serve models over an OpenAI-compatible HTTP API")
        {
            model, embeddingModel, rerankModel, maxBatchTokens, host, port, apiKey, noAuth, redis, database, device, threads, enforceEager, maxNumSeqs, maxBatched, kvDtype, kvMemory, gpuMemory, maxWaiting, maxModelLen, noPrefixCaching, plainLogs, dummy, otlpEndpoint, otlpProtocol, upstream, upstreamKey,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var options = new ServerOptions
            {
                Host = result.GetValue(host)!,
                Port = result.GetValue(port),
                ApiKey = result.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("ENCLAVE_API_KEY"),
                NoAuth = result.GetValue(noAuth),
                Redis = result.GetValue(redis),
                Database = result.GetValue(database),
                Device = result.GetValue(device)!,
                Threads = result.GetValue(threads),
                EnforceEager = result.GetValue(enforceEager),
                JsonLogs = !result.GetValue(plainLogs),
                DummyWeights = result.GetValue(dummy),
                OtlpProtocol = result.GetValue(otlpProtocol)!,
                UpstreamApiKey = result.GetValue(upstreamKey) ?? Environment.GetEnvironmentVariable("ENCLAVE_UPSTREAM_API_KEY"),
                Engine = new EngineOptions
                {
                    MaxNumSeqs = result.GetValue(maxNumSeqs),
                    MaxNumBatchedTokens = result.GetValue(maxBatched),
                    KvCacheBytes = result.GetValue(kvMemory),
                    KvCacheDtype = result.GetValue(kvDtype)!,
                    GpuMemoryUtilization = result.GetValue(gpuMemory),
                    MaxWaiting = result.GetValue(maxWaiting),
                    MaxModelLen = result.GetValue(maxModelLen),
                    EnablePrefixCaching = !result.GetValue(noPrefixCaching),
                },
            };
            foreach (var m in result.GetValue(model) ?? [])
            {
                options.Models.Add(ModelSpec.Parse(m));
            }

            foreach (var m in result.GetValue(embeddingModel) ?? [])
            {
                options.EmbeddingModels.Add(ModelSpec.Parse(m));
            }

            foreach (var m in result.GetValue(rerankModel) ?? [])
            {
                options.RerankModels.Add(ModelSpec.Parse(m));
            }

            options.Encoders = new Enclave.Engine.Embeddings.EncoderOptions { MaxBatchTokens = result.GetValue(maxBatchTokens) };

            configure?.Invoke(options);
            try
            {
                if (result.GetValue(otlpEndpoint) is { } otlp)
                {
                    options.OtlpEndpoint = Uri.TryCreate(otlp, UriKind.Absolute, out var uri)
                        ? uri
                        : throw new ArgumentException($"--otlp-endpoint {otlp}: expected an absolute URL such as http://otel-collector:4317");
                }

                if (result.GetValue(upstream) is { } engine)
                {
                    options.Upstream = Uri.TryCreate(engine, UriKind.Absolute, out var engineUri)
                        ? engineUri
                        : throw new ArgumentException($"--upstream {engine}: expected the engine's base URL, e.g. http://enclave-engine:8000");
                }

                if (options.Models.Count + options.EmbeddingModels.Count + options.RerankModels.Count == 0 && options.Upstream is null)
                {
                    throw new ArgumentException("nothing to serve: give at least one --model, --embedding-model or --rerank-model [NAME=]DIR, or --upstream URL for a gateway in front of an engine");
                }

                options.Validate();
            }
            catch (ArgumentException e)
            {
                await Console.Error.WriteLineAsync("enclave serve: " + e.Message);
                return 2;
            }

            options.Home = DataDirectory();
            await using var server = await EnclaveServer.StartAsync(options, cancellationToken: cancellationToken);
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // Ctrl+C: stop gracefully
            }

            return server.Catalog.Entries.Any(e => e.Error is not null) ? 1 : 0;
        });
        return command;
    }

    /// <summary>The data directory: ENCLAVE_HOME, else ~/.enclave. Created on first use.</summary>
    public static string DataDirectory()
    {
        var home = Enclave.Gateway.Store.EnclaveHome.Resolve();
        Directory.CreateDirectory(home);
        return home;
    }
}
