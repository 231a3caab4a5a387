using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Enclave.Engine.Templates;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Knowledge;
using Enclave.Knowledge.Retrieval;
using Enclave.Server.Hosting;
using Enclave.Server.Knowledge;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Api;

/// <summary>
/// The OpenAI-compatible endpoints (and vLLM's /tokenize and /detokenize) over the loaded models. Request bodies are
/// read strictly (<see cref="JsonRequest"/>); every failure is answered in OpenAI's error shape with its status.
/// </summary>
public sealed partial class OpenAiApi(ModelCatalog catalog, ServerMetrics metrics, ServerOptions options, ILogger logger, KnowledgeService? knowledge = null)
{
    private static readonly JsonSerializerOptions Compact = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly byte[] DoneEvent = "data: [DONE]\n\n"u8.ToArray();

    public void Map(WebApplication app)
    {
        // Each endpoint declares the gateway permission it needs (docs/security.md, permission matrix).
        app.MapGet("/v1/models", ctx => Handle(ctx, ListModels)).RequirePermission(Permissions.ModelsRead);
        app.MapPost("/v1/chat/completions", ctx => Handle(ctx, ChatCompletions)).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/completions", ctx => Handle(ctx, Completions)).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/embeddings", ctx => Handle(ctx, Embeddings)).RequirePermission(Permissions.Inference);
        app.MapPost("/tokenize", ctx => Handle(ctx, Tokenize)).RequirePermission(Permissions.Inference);
        app.MapPost("/detokenize", ctx => Handle(ctx, Detokenize)).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/rerank", ctx => Handle(ctx, Rerank)).RequirePermission(Permissions.Inference);
        app.MapPost("/rerank", ctx => Handle(ctx, Rerank)).RequirePermission(Permissions.Inference);
    }

    // ---------------------------------------------------------------- plumbing

    private Task Handle(HttpContext ctx, Func<HttpContext, Task> handler) =>
        ApiHandler.RunAsync(ctx, handler, ToApiError, logger, "request", WriteErrorIntoStream, metrics.Rejected);

    /// <summary>A stream already began: the error goes in the stream, as vLLM does.</summary>
    private static async Task WriteErrorIntoStream(HttpContext ctx, ApiException error)
    {
        try
        {
            await WriteEvent(ctx, error.ToJson());
            await ctx.Response.Body.WriteAsync(DoneEvent);
        }
        catch (Exception)
        {
            // the client is gone
        }
    }

    public static async Task WriteError(HttpContext ctx, ApiException error)
    {
        ctx.Response.StatusCode = error.Status;
        if (error.RetryAfterSeconds is { } retry)
        {
            ctx.Response.Headers.RetryAfter = retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(error.ToJson().ToJsonString(Compact));
    }

    public static ApiException ToApiError(Exception e) => e switch
    {
        ApiException a => a,
        ContextLengthExceededException c => new ApiException(400, c.Message, null, "context_length_exceeded"),
        EngineBusyException b => new ApiException(429, b.Message, null, "queue_full") { RetryAfterSeconds = 1 },
        BadHttpRequestException h when h.StatusCode == 413 => new ApiException(413, $"the request body is larger than the server accepts", null, "request_too_large"),
        BadHttpRequestException h => new ApiException(h.StatusCode, h.Message),
        ArgumentException a => new ApiException(400, ArgumentMessage(a), a.ParamName),
        TemplateException t => new ApiException(400, $"the chat template failed on these messages: {t.Message}", "messages"),
        InvalidOperationException i when i.Message.Contains("chat_template", StringComparison.Ordinal) => new ApiException(400, i.Message, "messages"),
        _ => new ApiException(500, "internal server error; the request was not completed", null, "internal_error"),
    };

    private static string ArgumentMessage(ArgumentException a) =>
        a.ParamName is null ? a.Message : a.Message.Replace($" (Parameter '{a.ParamName}')", string.Empty, StringComparison.Ordinal);

    private async Task<JsonRequest> ReadBody(HttpContext ctx)
    {
        var limit = options.MaxRequestBodyBytes;
        if (ctx.Request.ContentLength > limit)
        {
            throw new ApiException(413, $"the request body ({ctx.Request.ContentLength} bytes) is larger than the {limit} bytes this server accepts", null, "request_too_large");
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[16384];
        int read;
        while ((read = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > limit)
            {
                throw new ApiException(413, $"the request body is larger than the {limit} bytes this server accepts", null, "request_too_large");
            }
        }

        return JsonRequest.Parse(buffer.GetBuffer().AsMemory(0, (int)buffer.Length));
    }

    private static async Task WriteJson(HttpContext ctx, JsonNode body)
    {
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(Compact), ctx.RequestAborted);
    }

    /// <summary>
    /// Streams the events the choices produce, in arrival order, flushing whenever the queue runs dry so tokens reach
    /// the client promptly while bursts go out in one write; completes once every producer has finished.
    /// </summary>
    private static async Task PumpEventsAsync(HttpContext ctx, Channel<JsonObject> events, Task[] producers)
    {
        var all = Task.WhenAll(producers).ContinueWith(t => events.Writer.TryComplete(t.Exception?.InnerException), TaskScheduler.Default);
        try
        {
            await foreach (var e in events.Reader.ReadAllAsync(ctx.RequestAborted))
            {
                await WriteEvent(ctx, e);
                if (events.Reader.Count == 0)
                {
                    await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                }
            }
        }
        finally
        {
            await all;
        }
    }

    private static async Task WriteEvent(HttpContext ctx, JsonNode body)
    {
        var bytes = Encoding.UTF8.GetBytes("data: " + body.ToJsonString(Compact) + "\n\n");
        await ctx.Response.Body.WriteAsync(bytes, ctx.RequestAborted);
    }

    private static async Task StartStream(HttpContext ctx)
    {
        ctx.Response.ContentType = "text/event-stream; charset=utf-8";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
    }

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    private static string NewId(string prefix) => prefix + Guid.NewGuid().ToString("N");

    // ---------------------------------------------------------------- models, embeddings, tokenize

    private Task ListModels(HttpContext ctx)
    {
        var data = new JsonArray();
        foreach (var e in catalog.Entries)
        {
            var model = new JsonObject
            {
                ["id"] = e.Name,
                ["object"] = "model",
                ["created"] = e.Created.ToUnixTimeSeconds(),
                ["owned_by"] = "enclave",
                ["root"] = e.Name,
                ["parent"] = null,
                ["ready"] = e.Model is not null,
            };
            if (e.Model is { } m)
            {
                model["max_model_len"] = m.Model.Engine.MaxModelLen;
            }

            model["type"] = "generate";
            data.Add((JsonNode)model);
        }

        foreach (var e in catalog.Encoders)
        {
            var model = new JsonObject
            {
                ["id"] = e.Name,
                ["object"] = "model",
                ["created"] = e.Created.ToUnixTimeSeconds(),
                ["owned_by"] = "enclave",
                ["root"] = e.Name,
                ["parent"] = null,
                ["ready"] = e.Ready,
                ["type"] = e.Kind == EncoderKind.Embedding ? "embedding" : "rerank",
            };
            if (e.Embedder is { } embedder)
            {
                model["max_model_len"] = embedder.MaxInputTokens;
                model["dimensions"] = embedder.Dimensions;
            }
            else if (e.Reranker is { } reranker)
            {
                model["max_model_len"] = reranker.MaxInputTokens;
            }

            data.Add((JsonNode)model);
        }

        return WriteJson(ctx, new JsonObject { ["object"] = "list", ["data"] = data });
    }

    private async Task Tokenize(HttpContext ctx)
    {
        var r = await ReadBody(ctx);
        var served = catalog.Resolve(r.String("model"));
        var lm = served.Model;
        RequestLog.For(ctx).Model = served.Name;
        int[] ids;
        if (r.Has("messages"))
        {
            var messages = ChatMessages(r);
            var prompt = lm.RenderChat(messages, r.Bool("add_generation_prompt") ?? true, Tools(r), TemplateKwargs(r));
            ids = lm.Tokenizer.Encode(prompt, r.Bool("add_special_tokens") ?? false);
        }
        else
        {
            var prompt = r.String("prompt", required: true)!;
            ids = lm.Tokenizer.Encode(prompt, r.Bool("add_special_tokens") ?? true);
        }

        var body = new JsonObject
        {
            ["count"] = ids.Length,
            ["max_model_len"] = lm.Engine.MaxModelLen,
            ["tokens"] = new JsonArray([.. ids.Select(i => (JsonNode)i)]),
        };
        if (r.Bool("return_token_strs") == true)
        {
            body["token_strs"] = new JsonArray([.. ids.Select(i => (JsonNode?)lm.Tokenizer.IdToToken(i))]);
        }

        await WriteJson(ctx, body);
    }

    private async Task Detokenize(HttpContext ctx)
    {
        var r = await ReadBody(ctx);
        var served = catalog.Resolve(r.String("model"));
        RequestLog.For(ctx).Model = served.Name;
        var tokens = r.Integers("tokens", served.Model.Config.VocabSize - 1) ?? throw ApiException.BadParam("tokens", "'tokens' is required");
        var text = served.Model.Tokenizer.Decode([.. tokens], skipSpecialTokens: false);
        await WriteJson(ctx, new JsonObject { ["prompt"] = text });
    }

    // ---------------------------------------------------------------- request parsing

    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>Checks OpenAI messages and flattens content-part arrays to text for the chat template.</summary>
    private static JsonArray ChatMessages(JsonRequest r)
    {
        if (r["messages"] is not JsonArray messages)
        {
            throw ApiException.BadParam("messages", r.Has("messages") ? "'messages' must be an array of message objects" : "'messages' is required");
        }

        if (messages.Count == 0)
        {
            throw ApiException.BadParam("messages", "'messages' must contain at least one message");
        }

        var result = new JsonArray();
        for (var i = 0; i < messages.Count; i++)
        {
            var where = $"messages[{i}]";
            if (messages[i] is not JsonObject m)
            {
                throw ApiException.BadParam(where, $"'{where}' must be an object with a role and content");
            }

            var role = m["role"];
            if (role is null || role.GetValueKind() != JsonValueKind.String || !Roles.Contains(role.GetValue<string>()))
            {
                throw ApiException.BadParam($"{where}.role", $"'{where}.role' must be one of system, developer, user, assistant, tool");
            }

            var copy = (JsonObject)m.DeepClone();
            var roleName = role.GetValue<string>();
            copy["role"] = roleName == "developer" ? "system" : roleName;
            var content = m["content"];
            switch (content)
            {
                case null when roleName == "assistant" && m["tool_calls"] is JsonArray:
                    copy["content"] = string.Empty;
                    break;
                case null:
                    throw ApiException.BadParam($"{where}.content", $"'{where}.content' is required");
                case JsonValue when content.GetValueKind() == JsonValueKind.String:
                    break;
                case JsonArray parts:
                    copy["content"] = FlattenParts(parts, $"{where}.content");
                    break;
                default:
                    throw ApiException.BadParam($"{where}.content", $"'{where}.content' must be a string or an array of content parts");
            }

            result.Add((JsonNode)copy);
        }

        return result;
    }

    private static string FlattenParts(JsonArray parts, string where)
    {
        var text = new StringBuilder();
        for (var i = 0; i < parts.Count; i++)
        {
            if (parts[i] is not JsonObject part || part["type"] is not JsonValue type || type.GetValueKind() != JsonValueKind.String)
            {
                throw ApiException.BadParam($"{where}[{i}]", $"'{where}[{i}]' must be an object with a type");
            }

            switch (type.GetValue<string>())
            {
                case "text":
                    if (part["text"] is not JsonValue t || t.GetValueKind() != JsonValueKind.String)
                    {
                        throw ApiException.BadParam($"{where}[{i}].text", $"'{where}[{i}].text' must be a string");
                    }

                    if (text.Length > 0)
                    {
                        text.Append('\n');
                    }

                    text.Append(t.GetValue<string>());
                    break;
                default:
                    throw ApiException.BadParam($"{where}[{i}].type", $"content part type '{type.GetValue<string>()}' is not supported by this text-only model (use 'text')");
            }
        }

        return text.ToString();
    }

    private static JsonArray? Tools(JsonRequest r) => r["tools"] switch
    {
        null => null,
        JsonArray a => (JsonArray)a.DeepClone(),
        _ => throw ApiException.BadParam("tools", "'tools' must be an array"),
    };

    private static Dictionary<string, object?>? TemplateKwargs(JsonRequest r)
    {
        var kwargs = r.Object("chat_template_kwargs");
        if (kwargs is null)
        {
            return null;
        }

        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in kwargs)
        {
            result[key] = value switch
            {
                null => null,
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                JsonValue v when v.GetValueKind() == JsonValueKind.True => true,
                JsonValue v when v.GetValueKind() == JsonValueKind.False => false,
                JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out var l) => l,
                JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
                _ => value.DeepClone(),
            };
        }

        return result;
    }

    /// <summary>Sampling parameters from a request; ranges are checked here or by <see cref="SamplingParams.Validate"/>.</summary>
    private static (SamplingParams Parameters, int N, bool TokenIds) Sampling(JsonRequest r, ServedModel served, int promptLength, bool chat)
    {
        var g = served.Model.GenerationConfig;
        const double Any = 1e300;
        var maxModelLen = served.Model.Engine.MaxModelLen;
        var maxTokens = (chat ? r.Integer("max_completion_tokens", 1, int.MaxValue) : null) ?? r.Integer("max_tokens", 1, int.MaxValue);
        var n = (int)(r.Integer("n", 1, 1024) ?? 1);
        if (r.Integer("best_of", 1, 1024) is { } bestOf && bestOf != n)
        {
            throw ApiException.BadParam("best_of", "'best_of' is not supported unless it equals n");
        }

        int? logprobs;
        if (chat)
        {
            var wants = r.Bool("logprobs") ?? false;
            var top = r.Integer("top_logprobs", 0, 20);
            if (top is not null && !wants)
            {
                throw ApiException.BadParam("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            }

            logprobs = wants ? (int)(top ?? 0) : null;
        }
        else
        {
            logprobs = (int?)r.Integer("logprobs", 0, 20);
        }

        if (r.Bool("echo") == true)
        {
            throw ApiException.BadParam("echo", "'echo' is not supported");
        }

        if (r.Has("suffix"))
        {
            throw ApiException.BadParam("suffix", "'suffix' is not supported");
        }

        r.String("user");
        var p = new SamplingParams
        {
            Temperature = r.Number("temperature", -Any, Any) ?? g.Temperature ?? 1.0,
            TopP = r.Number("top_p", -Any, Any) ?? g.TopP ?? 1.0,
            TopK = (int)(r.Integer("top_k", -1, int.MaxValue) ?? g.TopK ?? 0),
            MinP = r.Number("min_p", -Any, Any) ?? 0,
            RepetitionPenalty = r.Number("repetition_penalty", -Any, Any) ?? g.RepetitionPenalty ?? 1.0,
            FrequencyPenalty = r.Number("frequency_penalty", -Any, Any) ?? 0,
            PresencePenalty = r.Number("presence_penalty", -Any, Any) ?? 0,
            Seed = r.Integer("seed", long.MinValue, long.MaxValue),
            MaxTokens = (int)(maxTokens ?? (chat ? Math.Max(1, maxModelLen - promptLength) : Math.Min(16, Math.Max(1, maxModelLen - promptLength)))),
            MinTokens = (int)(r.Integer("min_tokens", 0, int.MaxValue) ?? 0),
            IgnoreEos = r.Bool("ignore_eos") ?? false,
            StopTokenIds = r.Integers("stop_token_ids", served.Model.Config.VocabSize - 1) ?? [],
            Stop = r.StringOrStrings("stop") ?? [],
            Logprobs = logprobs,
            SkipSpecialTokens = r.Bool("skip_special_tokens") ?? true,
        };
        p.Validate();
        return (p, n, r.Bool("return_tokens_as_token_ids") ?? false);
    }

    // ---------------------------------------------------------------- generation

    /// <summary>One choice's generation: the text, tokens and log-probabilities collected, and timing.</summary>
    private sealed class Choice(int index, int promptIndex, int promptLength, IAsyncEnumerable<TextChunk> stream, ReasoningSplitter? reasoning)
    {
        public int Index { get; } = index;

        public int PromptIndex { get; } = promptIndex;

        public int PromptLength { get; } = promptLength;

        public IAsyncEnumerable<TextChunk> Stream { get; } = stream;

        public ReasoningSplitter? Reasoning { get; } = reasoning;

        public StringBuilder Text { get; } = new();

        public StringBuilder ReasoningText { get; } = new();

        public List<TextChunk> Chunks { get; } = [];

        public int Tokens { get; set; }

        public string? Finish { get; set; }
    }

    private static string FinishName(FinishReason? finish) => finish switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        _ => "abort",
    };

    /// <summary>Submits every choice before anything is sent, so refusals become an error status; on a refusal the ones already submitted are aborted.</summary>
    private static List<Choice> Submit(ServedModel served, IReadOnlyList<int[]> prompts, SamplingParams p, int n, bool reasoningOpen, CancellationToken cancellationToken)
    {
        var choices = new List<Choice>();
        try
        {
            for (var pi = 0; pi < prompts.Count; pi++)
            {
                for (var i = 0; i < n; i++)
                {
                    var parameters = p.Seed is { } seed && i > 0 ? p with { Seed = unchecked(seed + i) } : p;
                    var stream = served.Model.Start(prompts[pi], parameters, cancellationToken);
                    var reasoning = served.HasReasoning && served.ThinkStartId is { } s && served.ThinkEndId is { } e
                        ? new ReasoningSplitter(s, e, reasoningOpen)
                        : null;
                    choices.Add(new Choice(choices.Count, pi, prompts[pi].Length, stream, reasoning));
                }
            }
        }
        catch
        {
            AbortAll(choices);
            throw;
        }

        return choices;
    }

    private static void AbortAll(List<Choice> choices)
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        foreach (var c in choices)
        {
            // Reading with a cancelled token aborts the submitted sequence at the engine's next step.
            var e = c.Stream.GetAsyncEnumerator(cancelled.Token);
            try
            {
                e.MoveNextAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
            }
            catch (Exception)
            {
                // expected: cancelled
            }
        }
    }

    /// <summary>Runs one choice to its end, handing each chunk to <paramref name="onChunk"/>, and records its metrics.</summary>
    private async Task RunChoice(Choice c, string model, long startTimestamp, RequestLog log, Func<Choice, TextChunk, string?, string?, ValueTask> onChunk)
    {
        long last = 0;
        double? firstSeconds = null;
        var finished = false;
        try
        {
            await foreach (var chunk in c.Stream)
            {
                var now = Stopwatch.GetTimestamp();
                if (last == 0)
                {
                    firstSeconds = Stopwatch.GetElapsedTime(startTimestamp, now).TotalSeconds;
                    metrics.FirstToken(model, firstSeconds.Value);
                    if (c.Index == 0)
                    {
                        log.TimeToFirstTokenMs = firstSeconds * 1000;
                    }
                }
                else
                {
                    metrics.InterToken(model, Stopwatch.GetElapsedTime(last, now).TotalSeconds);
                }

                last = now;
                c.Tokens++;
                string? reasoningText = null;
                var contentText = chunk.Text;
                if (c.Reasoning is { } splitter)
                {
                    (reasoningText, contentText) = splitter.Route(chunk.TokenId, chunk.Text);
                }

                c.Text.Append(contentText);
                c.ReasoningText.Append(reasoningText);
                if (chunk.Finish is not null)
                {
                    c.Finish = FinishName(chunk.Finish);
                }

                await onChunk(c, chunk, reasoningText, contentText);
            }

            finished = c.Finish is not null;
            c.Finish ??= "abort";
        }
        finally
        {
            if (finished)
            {
                metrics.Finished(model, c.Finish!, Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds, c.PromptLength, c.Tokens, firstSeconds);
            }
            else
            {
                metrics.Aborted(model);
            }
        }
    }

    private static JsonObject Logprobs(ServedModel served, bool chat, bool tokenIds, IReadOnlyList<TextChunk> chunks, int textOffset)
    {
        var tokenizer = served.Model.Tokenizer;
        string Token(int id) => tokenIds ? $"token_id:{id}" : tokenizer.Decode([id], skipSpecialTokens: false);
        static double Lp(float v) => float.IsFinite(v) ? v : -9999.0;
        static JsonArray Bytes(string s) => new([.. Encoding.UTF8.GetBytes(s).Select(b => (JsonNode)(int)b)]);
        if (chat)
        {
            var content = new JsonArray();
            foreach (var chunk in chunks)
            {
                var token = Token(chunk.TokenId);
                var top = new JsonArray();
                foreach (var t in chunk.TopLogprobs ?? [])
                {
                    var s = Token(t.TokenId);
                    top.Add((JsonNode)new JsonObject { ["token"] = s, ["logprob"] = Lp(t.Logprob), ["bytes"] = Bytes(s) });
                }

                content.Add((JsonNode)new JsonObject { ["token"] = token, ["logprob"] = Lp(chunk.Logprob), ["bytes"] = Bytes(token), ["top_logprobs"] = top });
            }

            return new JsonObject { ["content"] = content };
        }

        var tokens = new JsonArray();
        var tokenLogprobs = new JsonArray();
        var topLogprobs = new JsonArray();
        var offsets = new JsonArray();
        var offset = textOffset;
        foreach (var chunk in chunks)
        {
            var token = Token(chunk.TokenId);
            tokens.Add((JsonNode)token);
            tokenLogprobs.Add((JsonNode)Lp(chunk.Logprob));
            var top = new JsonObject();
            foreach (var t in chunk.TopLogprobs ?? [])
            {
                top[Token(t.TokenId)] = Lp(t.Logprob);
            }

            topLogprobs.Add((JsonNode)top);
            offsets.Add((JsonNode)offset);
            offset += chunk.Text.Length;
        }

        return new JsonObject { ["tokens"] = tokens, ["token_logprobs"] = tokenLogprobs, ["top_logprobs"] = topLogprobs, ["text_offset"] = offsets };
    }

    private static JsonObject Usage(int prompt, int completion, int cached) => new()
    {
        ["prompt_tokens"] = prompt,
        ["completion_tokens"] = completion,
        ["total_tokens"] = prompt + completion,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = cached },
    };

    // ---------------------------------------------------------------- chat

    private async Task ChatCompletions(HttpContext ctx)
    {
        var start = Stopwatch.GetTimestamp();
        var r = await ReadBody(ctx);
        var served = catalog.Resolve(r.String("model"));
        var log = RequestLog.For(ctx);
        log.Model = served.Name;
        var messages = ChatMessages(r);
        IReadOnlyList<SearchHit>? citations = null;
        if (r.Object("knowledge") is { } grounding)
        {
            (messages, citations) = await GroundAsync(ctx, grounding, messages);
        }

        var stream = r.Bool("stream") ?? false;
        var includeUsage = false;
        if (r.Object("stream_options") is { } so)
        {
            var inc = so["include_usage"];
            includeUsage = inc is not null && (inc.GetValueKind() is JsonValueKind.True or JsonValueKind.False
                ? inc.GetValue<bool>()
                : throw ApiException.BadParam("stream_options.include_usage", "'stream_options.include_usage' must be a boolean"));
        }

        var addGenerationPrompt = r.Bool("add_generation_prompt") ?? true;
        var rendered = served.Model.RenderChat(messages, addGenerationPrompt, Tools(r), TemplateKwargs(r));
        var promptIds = served.Model.Tokenizer.Encode(rendered, addSpecialTokens: false);
        if (promptIds.Length == 0)
        {
            throw ApiException.BadParam("messages", "the messages render to an empty prompt");
        }

        var (p, n, tokenIds) = Sampling(r, served, promptIds.Length, chat: true);
        if (n * 1L > options.MaxN)
        {
            throw ApiException.BadParam("n", $"'n' must be at most {options.MaxN}");
        }

        var id = NewId("chatcmpl-");
        log.RequestId = id;
        log.Stream = stream;
        log.PromptTokens = promptIds.Length;
        var created = Now();
        var choices = Submit(served, [promptIds], p, n, ReasoningSplitter.PromptOpensThink(rendered), ctx.RequestAborted);
        var model = served.Name;
        if (stream)
        {
            await StartStream(ctx);
            var events = Channel.CreateUnbounded<JsonObject>();
            JsonObject Chunk(JsonArray choiceArray) => new()
            {
                ["id"] = id,
                ["object"] = "chat.completion.chunk",
                ["created"] = created,
                ["model"] = model,
                ["choices"] = choiceArray,
            };

            if (citations is not null)
            {
                // Clients that know the extension read the sources before the answer; others see a chunk without choices.
                var sources = Chunk([]);
                sources["citations"] = CitationsJson(citations);
                events.Writer.TryWrite(sources);
            }

            foreach (var c in choices)
            {
                var first = Chunk([new JsonObject
                {
                    ["index"] = c.Index,
                    ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = string.Empty },
                    ["logprobs"] = null,
                    ["finish_reason"] = null,
                }]);
                if (includeUsage)
                {
                    first["usage"] = null;
                }

                events.Writer.TryWrite(first);
            }

            var producers = choices.Select(c => RunChoice(c, model, start, log, (ch, chunk, reasoningText, contentText) =>
            {
                if (string.IsNullOrEmpty(reasoningText) && string.IsNullOrEmpty(contentText) && chunk.Finish is null && p.Logprobs is null)
                {
                    return ValueTask.CompletedTask;
                }

                var delta = new JsonObject();
                if (!string.IsNullOrEmpty(reasoningText))
                {
                    delta["reasoning_content"] = reasoningText;
                    delta["reasoning"] = reasoningText;
                }

                if (!string.IsNullOrEmpty(contentText) || (reasoningText is null && ch.Reasoning is null))
                {
                    delta["content"] = contentText ?? string.Empty;
                }

                var body = Chunk([new JsonObject
                {
                    ["index"] = ch.Index,
                    ["delta"] = delta,
                    ["logprobs"] = p.Logprobs is null ? null : Logprobs(served, true, tokenIds, [chunk], 0),
                    ["finish_reason"] = chunk.Finish is null ? null : ch.Finish,
                }]);
                if (includeUsage)
                {
                    body["usage"] = null;
                }

                events.Writer.TryWrite(body);
                return ValueTask.CompletedTask;
            })).ToArray();
            await PumpEventsAsync(ctx, events, producers);

            var completionTokens = choices.Sum(c => c.Tokens);
            if (includeUsage)
            {
                var usage = Chunk([]);
                usage["usage"] = Usage(promptIds.Length, completionTokens, 0);
                await WriteEvent(ctx, usage);
            }

            await ctx.Response.Body.WriteAsync(DoneEvent, ctx.RequestAborted);
            log.CompletionTokens = completionTokens;
            log.FinishReason = choices[0].Finish;
            return;
        }

        await Task.WhenAll(choices.Select(c => RunChoice(c, model, start, log, (ch, chunk, _, _) =>
        {
            if (p.Logprobs is not null)
            {
                ch.Chunks.Add(chunk);
            }

            return ValueTask.CompletedTask;
        })));
        var array = new JsonArray();
        foreach (var c in choices)
        {
            var message = new JsonObject { ["role"] = "assistant" };
            if (c.Reasoning is not null)
            {
                var reasoning = c.ReasoningText.Length > 0 ? c.ReasoningText.ToString() : null;
                message["content"] = c.Text.Length > 0 ? c.Text.ToString() : null;
                message["reasoning_content"] = reasoning;
                message["reasoning"] = reasoning;
            }
            else
            {
                message["content"] = c.Text.ToString();
            }

            message["tool_calls"] = new JsonArray();
            array.Add((JsonNode)new JsonObject
            {
                ["index"] = c.Index,
                ["message"] = message,
                ["logprobs"] = p.Logprobs is null ? null : Logprobs(served, true, tokenIds, c.Chunks, 0),
                ["finish_reason"] = c.Finish,
            });
        }

        var total = choices.Sum(c => c.Tokens);
        log.CompletionTokens = total;
        log.FinishReason = choices[0].Finish;
        var response = new JsonObject
        {
            ["id"] = id,
            ["object"] = "chat.completion",
            ["created"] = created,
            ["model"] = model,
            ["choices"] = array,
            ["usage"] = Usage(promptIds.Length, total, 0),
        };
        if (citations is not null)
        {
            response["citations"] = CitationsJson(citations);
        }

        await WriteJson(ctx, response);
    }

    private static JsonArray CitationsJson(IReadOnlyList<SearchHit> hits) => new([.. hits.Select((h, i) => (JsonNode)KnowledgeApi.HitJson(h, i + 1))]);

    /// <summary>
    /// The <c>"knowledge"</c> extension: retrieves passages for the last user turn from the named collections the caller
    /// may read and puts them, numbered, in a system message built from the zh or en template.
    /// </summary>
    private async Task<(JsonArray Messages, IReadOnlyList<SearchHit> Hits)> GroundAsync(HttpContext ctx, JsonObject grounding, JsonArray messages)
    {
        if (knowledge is null)
        {
            throw ApiException.BadParam("knowledge", "this server has no knowledge base");
        }

        if (!KnowledgeService.Has(ctx, Permissions.KbRead))
        {
            throw new ApiException(403, "this key may not use knowledge collections (it needs the kb.read permission)", "knowledge", "permission_denied");
        }

        var g = new JsonRequest(grounding);
        var collections = g["collections"] is JsonArray array && array.Count is > 0 and <= 16
                                                             && array.All(n => n is JsonValue v && v.GetValueKind() == JsonValueKind.String)
            ? array.Select(n => n!.GetValue<string>()).ToList()
            : throw ApiException.BadParam("knowledge.collections", "'knowledge.collections' must be an array of 1 to 16 collection names");
        var topK = (int)(JsonRequest.Integer(g["top_k"], "knowledge.top_k", 1, 20) ?? 5);
        var question = messages.OfType<JsonObject>().LastOrDefault(m => m["role"]?.GetValue<string>() == "user")?["content"]?.GetValue<string>();
        if (string.IsNullOrWhiteSpace(question))
        {
            throw ApiException.BadParam("messages", "a 'knowledge' request needs a user message to retrieve for");
        }

        SearchRequest request;
        try
        {
            request = KnowledgeApi.ReadSearch(g, question) with { TopK = topK };
        }
        catch (ApiException e) when (e.Param is not null)
        {
            throw new ApiException(e.Status, "knowledge: " + e.Message, "knowledge." + e.Param, e.Code);
        }

        IReadOnlyList<SearchHit> hits;
        try
        {
            var kb = await knowledge.GetAsync();
            hits = await kb.SearchAsync(collections, request, KnowledgeService.Caller(ctx), ctx.RequestAborted);
        }
        catch (KnowledgeException e)
        {
            throw new ApiException(e.Status, e.Message, "knowledge.collections", e.Code);
        }

        var language = g.String("language") ?? "auto";
        var chinese = language switch
        {
            "zh" => true,
            "en" => false,
            "auto" => question.Any(Enclave.Knowledge.Extraction.Cjk.IsCjk),
            _ => throw ApiException.BadParam("knowledge.language", "'knowledge.language' must be zh, en or auto"),
        };
        var context = hits.Count > 0 ? KnowledgeApi.Context(hits) : chinese ? "（未找到相关资料）" : "(no passages were found)";
        var system = (chinese ? options.Knowledge.PromptZh : options.Knowledge.PromptEn).Replace("{context}", context, StringComparison.Ordinal);
        var grounded = (JsonArray)messages.DeepClone();
        if (grounded[0] is JsonObject first && first["role"]?.GetValue<string>() == "system")
        {
            first["content"] = first["content"]!.GetValue<string>() + "\n\n" + system;
        }
        else
        {
            grounded.Insert(0, new JsonObject { ["role"] = "system", ["content"] = system });
        }

        return (grounded, hits);
    }

    // ---------------------------------------------------------------- completions

    private static List<int[]> CompletionPrompts(JsonRequest r, ServedModel served)
    {
        var node = r["prompt"] ?? throw ApiException.BadParam("prompt", "'prompt' is required");
        var tokenizer = served.Model.Tokenizer;
        var vocab = served.Model.Config.VocabSize - 1;
        var prompts = new List<int[]>();
        if (node.GetValueKind() == JsonValueKind.String)
        {
            prompts.Add(tokenizer.Encode(node.GetValue<string>(), addSpecialTokens: true));
        }
        else if (node is JsonArray array && array.Count > 0)
        {
            var kind = array[0]?.GetValueKind();
            if (kind == JsonValueKind.String)
            {
                foreach (var item in array)
                {
                    if (item is null || item.GetValueKind() != JsonValueKind.String)
                    {
                        throw ApiException.BadParam("prompt", "'prompt' arrays must hold only strings, only token ids, or only arrays of token ids");
                    }

                    prompts.Add(tokenizer.Encode(item.GetValue<string>(), addSpecialTokens: true));
                }
            }
            else if (kind == JsonValueKind.Number)
            {
                prompts.Add(TokenIds(array, vocab));
            }
            else if (kind == JsonValueKind.Array)
            {
                foreach (var item in array)
                {
                    prompts.Add(item is JsonArray ids && ids.Count > 0
                        ? TokenIds(ids, vocab)
                        : throw ApiException.BadParam("prompt", "'prompt' arrays must hold only strings, only token ids, or only non-empty arrays of token ids"));
                }
            }
            else
            {
                throw ApiException.BadParam("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays");
            }
        }
        else
        {
            throw ApiException.BadParam("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays (and not empty)");
        }

        if (prompts.Any(p => p.Length == 0))
        {
            throw ApiException.BadParam("prompt", "the prompt is empty: at least one token is needed");
        }

        return prompts;
    }

    private static int[] TokenIds(JsonArray array, int maxId)
    {
        var ids = new int[array.Count];
        for (var i = 0; i < ids.Length; i++)
        {
            var item = array[i];
            if (item is null || item.GetValueKind() != JsonValueKind.Number)
            {
                throw ApiException.BadParam("prompt", "'prompt' arrays must hold only strings, only token ids, or only arrays of token ids");
            }

            ids[i] = (int)JsonRequest.Integer(item, "prompt", 0, maxId)!.Value;
        }

        return ids;
    }

    private async Task Completions(HttpContext ctx)
    {
        var start = Stopwatch.GetTimestamp();
        var r = await ReadBody(ctx);
        var served = catalog.Resolve(r.String("model"));
        var log = RequestLog.For(ctx);
        log.Model = served.Name;
        var prompts = CompletionPrompts(r, served);
        var stream = r.Bool("stream") ?? false;
        var includeUsage = r.Object("stream_options") is { } so && so["include_usage"] is { } inc
            && (inc.GetValueKind() is JsonValueKind.True or JsonValueKind.False
                ? inc.GetValue<bool>()
                : throw ApiException.BadParam("stream_options.include_usage", "'stream_options.include_usage' must be a boolean"));
        var (p, n, tokenIds) = Sampling(r, served, prompts.Max(x => x.Length), chat: false);
        if ((long)n * prompts.Count > options.MaxN)
        {
            throw ApiException.BadParam("n", $"n × prompts must be at most {options.MaxN}");
        }

        var id = NewId("cmpl-");
        log.RequestId = id;
        log.Stream = stream;
        var promptTokens = prompts.Sum(x => x.Length);
        log.PromptTokens = promptTokens;
        var created = Now();
        var model = served.Name;
        var choices = Submit(served, prompts, p, n, reasoningOpen: false, ctx.RequestAborted);
        if (stream)
        {
            await StartStream(ctx);
            var events = Channel.CreateUnbounded<JsonObject>();
            var offsets = new int[choices.Count];
            var producers = choices.Select(c => RunChoice(c, model, start, log, (ch, chunk, _, _) =>
            {
                var text = chunk.Text;
                var body = new JsonObject
                {
                    ["id"] = id,
                    ["object"] = "text_completion",
                    ["created"] = created,
                    ["model"] = model,
                    ["choices"] = new JsonArray(new JsonObject
                    {
                        ["index"] = ch.Index,
                        ["text"] = text,
                        ["logprobs"] = p.Logprobs is null ? null : Logprobs(served, false, tokenIds, [chunk], offsets[ch.Index]),
                        ["finish_reason"] = chunk.Finish is null ? null : ch.Finish,
                    }),
                };
                offsets[ch.Index] += text.Length;
                if (includeUsage)
                {
                    body["usage"] = null;
                }

                events.Writer.TryWrite(body);
                return ValueTask.CompletedTask;
            })).ToArray();
            await PumpEventsAsync(ctx, events, producers);

            var completionTokens = choices.Sum(c => c.Tokens);
            if (includeUsage)
            {
                await WriteEvent(ctx, new JsonObject
                {
                    ["id"] = id,
                    ["object"] = "text_completion",
                    ["created"] = created,
                    ["model"] = model,
                    ["choices"] = new JsonArray(),
                    ["usage"] = Usage(promptTokens, completionTokens, 0),
                });
            }

            await ctx.Response.Body.WriteAsync(DoneEvent, ctx.RequestAborted);
            log.CompletionTokens = completionTokens;
            log.FinishReason = choices[0].Finish;
            return;
        }

        await Task.WhenAll(choices.Select(c => RunChoice(c, model, start, log, (ch, chunk, _, _) =>
        {
            ch.Chunks.Add(chunk);
            return ValueTask.CompletedTask;
        })));
        var array = new JsonArray();
        foreach (var c in choices)
        {
            array.Add((JsonNode)new JsonObject
            {
                ["index"] = c.Index,
                ["text"] = c.Text.ToString(),
                ["logprobs"] = p.Logprobs is null ? null : Logprobs(served, false, tokenIds, c.Chunks, 0),
                ["finish_reason"] = c.Finish,
                ["token_ids"] = r.Bool("return_token_ids") == true ? new JsonArray([.. c.Chunks.Select(x => (JsonNode)x.TokenId)]) : null,
            });
        }

        var total = choices.Sum(c => c.Tokens);
        log.CompletionTokens = total;
        log.FinishReason = choices[0].Finish;
        await WriteJson(ctx, new JsonObject
        {
            ["id"] = id,
            ["object"] = "text_completion",
            ["created"] = created,
            ["model"] = model,
            ["choices"] = array,
            ["usage"] = Usage(promptTokens, total, 0),
        });
    }
}
