using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Enclave.Engine.Templates;
using Enclave.Engine.Tokenization;
using Microsoft.Extensions.Logging;

namespace Enclave.Engine.Generation;

/// <summary>
/// A loaded model ready to serve text: its config, tokenizer, chat template and running engine. This is the
/// in-process API (the CLI, the HTTP server and <see cref="EnclaveChatClient"/> all use it).
/// </summary>
public sealed class LanguageModel : IAsyncDisposable, IDisposable
{
    private readonly IWeightSource weights;
    private readonly bool ownsBackend;

    private LanguageModel(string name, string directory, ModelConfig config, GenerationConfig generationConfig, HfTokenizer tokenizer,
        IWeightSource weights, CausalLM model, InferenceEngine engine, bool ownsBackend)
    {
        Name = name;
        Directory = directory;
        Config = config;
        GenerationConfig = generationConfig;
        Tokenizer = tokenizer;
        Reasoning = ReasoningTokens.Detect(tokenizer);
        this.weights = weights;
        Model = model;
        Engine = engine;
        this.ownsBackend = ownsBackend;
        var template = tokenizer.Config.ChatTemplate;
        ChatTemplate = template is null ? null : new ChatTemplate(template, tokenizer.Config.SpecialTokensMap);
        var stops = new HashSet<int>(generationConfig.EosTokenIds);
        stops.UnionWith(config.EosTokenIds);
        if (tokenizer.EosTokenId is { } eos)
        {
            stops.Add(eos);
        }

        EosTokenIds = [.. stops.Order()];
    }

    public string Name { get; }

    public string Directory { get; }

    public ModelConfig Config { get; }

    public GenerationConfig GenerationConfig { get; }

    public HfTokenizer Tokenizer { get; }

    public ChatTemplate? ChatTemplate { get; }

    public CausalLM Model { get; }

    public InferenceEngine Engine { get; }

    /// <summary>Tokens that end generation unless ignore_eos: generation_config, config and tokenizer EOS ids.</summary>
    public int[] EosTokenIds { get; }

    /// <summary>The &lt;think&gt;/&lt;/think&gt; ids when the chat template has a reasoning block (R1, Qwen3), else null.</summary>
    public ReasoningTokens? Reasoning { get; }

    /// <summary>
    /// Loads a Hugging Face model directory (config.json, safetensors, tokenizer files) or a GGUF file onto a backend,
    /// or, when <paramref name="dummyWeights"/> is set, builds random weights from config.json alone.
    /// <paramref name="openWeights"/> replaces the safetensors reader for checkpoints stored another way (encrypted at rest).
    /// </summary>
    public static LanguageModel Load(string directory, IBackend backend, EngineOptions options, ILogger? logger = null,
        string? name = null, bool ownsBackend = false, bool dummyWeights = false, Func<string, IWeightSource>? openWeights = null)
    {
        ModelConfig config;
        HfTokenizer tokenizer;
        GenerationConfig generationConfig;
        IWeightSource weights;
        if (Formats.Gguf.GgufModel.IsGgufPath(directory))
        {
            // A GGUF file carries config, tokenizer and chat template in its metadata.
            var gguf = Formats.Gguf.GgufModel.Open(directory);
            config = gguf.Config;
            try
            {
                tokenizer = gguf.Tokenizer;
            }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException)
            {
                gguf.Dispose();
                throw new CheckpointFormatException($"{directory}: the embedded tokenizer cannot be read ({e.Message})", e);
            }
            catch
            {
                gguf.Dispose();
                throw;
            }

            generationConfig = new GenerationConfig();
            weights = gguf;
            if (dummyWeights)
            {
                gguf.Dispose();
                weights = DummyWeights.Create(config);
            }
        }
        else
        {
            config = ModelConfig.Load(directory);
            ModelRegistry.EnsureSupported(config); // fail before touching gigabytes of weights
            tokenizer = HfTokenizer.FromDirectory(directory);
            generationConfig = GenerationConfig.Load(directory);
            weights = dummyWeights ? DummyWeights.Create(config) : openWeights?.Invoke(directory) ?? SafetensorsCheckpoint.Open(directory);
        }

        CausalLM? model = null;
        try
        {
            model = ModelRegistry.Create(config, weights, backend);
            var eos = new HashSet<int>(generationConfig.EosTokenIds);
            eos.UnionWith(config.EosTokenIds);
            if (tokenizer.EosTokenId is { } e)
            {
                eos.Add(e);
            }

            var engine = new InferenceEngine(model, options, eos, logger);
            var defaultName = Formats.Gguf.GgufModel.IsGgufPath(directory)
                ? Path.GetFileNameWithoutExtension(directory)
                : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)));
            return new LanguageModel(name ?? defaultName,
                directory, config, generationConfig, tokenizer, weights, model, engine, ownsBackend);
        }
        catch
        {
            model?.Dispose();
            weights.Dispose();
            throw;
        }
    }

    /// <summary>Renders OpenAI-style messages through the model's chat template.</summary>
    public string RenderChat(JsonArray messages, bool addGenerationPrompt = true, JsonArray? tools = null, IReadOnlyDictionary<string, object?>? templateVariables = null)
    {
        if (ChatTemplate is null)
        {
            throw new InvalidOperationException($"{Directory}: the tokenizer config has no chat_template, so chat messages cannot be rendered; send a raw prompt instead");
        }

        return ChatTemplate.Render(messages, addGenerationPrompt, tools, templateVariables);
    }

    /// <summary>Tokenizes a rendered chat prompt: the template already placed BOS and special tokens, so none are added.</summary>
    public int[] EncodeChat(JsonArray messages, bool addGenerationPrompt = true, JsonArray? tools = null, IReadOnlyDictionary<string, object?>? templateVariables = null) =>
        Tokenizer.Encode(RenderChat(messages, addGenerationPrompt, tools, templateVariables), addSpecialTokens: false);

    /// <summary>
    /// Renders <paramref name="messages"/> through the chat template, generates, and streams the answer with a
    /// reasoning model's thinking separated from it (DeepSeek-R1's &lt;think&gt;…&lt;/think&gt;: everything before
    /// &lt;/think&gt; is reasoning; the R1 template opens &lt;think&gt; in the prompt, so output starts inside it).
    /// For a model without a reasoning block every chunk is content.
    /// </summary>
    public async IAsyncEnumerable<ChatChunk> ChatAsync(JsonArray messages, SamplingParams parameters, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var rendered = RenderChat(messages);
        var ids = Tokenizer.Encode(rendered, addSpecialTokens: false);
        var splitter = Reasoning is { } tokens ? new ReasoningSplitter(tokens, ReasoningSplitter.PromptOpensThink(rendered)) : null;
        await foreach (var chunk in GenerateAsync(ids, parameters, cancellationToken).ConfigureAwait(false))
        {
            if (splitter is null)
            {
                yield return new ChatChunk(null, chunk.Text.Length > 0 ? chunk.Text : null, chunk);
                continue;
            }

            var (thinking, content) = splitter.Route(chunk.TokenId, chunk.Text);
            yield return new ChatChunk(thinking, content, chunk);
        }
    }

    /// <summary>
    /// Generates from prompt ids and streams text: detokenized incrementally (never splitting a UTF-8 character),
    /// with stop strings matched across tokens and removed from the output.
    /// </summary>
    public async IAsyncEnumerable<TextChunk> GenerateAsync(IReadOnlyList<int> promptIds, SamplingParams parameters, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var sequence = Engine.Submit(promptIds, parameters);
        await foreach (var chunk in ReadAsync(sequence, cancellationToken).ConfigureAwait(false))
        {
            yield return chunk;
        }
    }

    /// <summary>
    /// Like <see cref="GenerateAsync"/> but submits at once, so a refusal (context length, full queue, invalid
    /// parameter) is thrown here rather than on the first read: a server can answer with an error status before it
    /// starts a stream. The request is aborted if the stream is not read to its end.
    /// </summary>
    public IAsyncEnumerable<TextChunk> Start(IReadOnlyList<int> promptIds, SamplingParams parameters, CancellationToken cancellationToken = default)
    {
        var sequence = Engine.Submit(promptIds, parameters);
        return ReadAsync(sequence, cancellationToken);
    }

    private async IAsyncEnumerable<TextChunk> ReadAsync(Sequence sequence, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var parameters = sequence.Parameters;
        var decoder = Tokenizer.CreateIncrementalDecoder(parameters.SkipSpecialTokens);
        var stops = new StopStringMatcher(parameters.Stop);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var enumerator = Engine.ReadTokensAsync(sequence, linked.Token).GetAsyncEnumerator(linked.Token);
        try
        {
            while (true)
            {
                bool more;
                try
                {
                    more = await enumerator.MoveNextAsync().ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (linked.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    yield break; // we stopped the engine ourselves after a stop string
                }

                if (!more)
                {
                    yield break;
                }

                var e = enumerator.Current;
                // The engine finishes with Stop only on an EOS or stop token, whose text never goes to the caller.
                var isStopToken = e.Finish == FinishReason.Stop;
                var piece = isStopToken ? string.Empty : decoder.Append(e.TokenId);
                if (e.Finish is not null)
                {
                    piece += decoder.Flush();
                }

                var (emit, matched) = stops.Append(piece);
                if (matched is not null)
                {
                    yield return new TextChunk(emit, e.TokenId, e.Logprob, e.TopLogprobs, FinishReason.Stop, matched);
                    await linked.CancelAsync().ConfigureAwait(false);
                    yield break;
                }

                if (e.Finish is not null)
                {
                    emit += stops.Flush();
                }

                yield return new TextChunk(emit, e.TokenId, e.Logprob, e.TopLogprobs, e.Finish, null);
                if (e.Finish is not null)
                {
                    yield break;
                }
            }
        }
        finally
        {
            await enumerator.DisposeAsync().ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        Engine.Dispose();
        Model.Dispose();
        weights.Dispose();
        if (ownsBackend)
        {
            Model.Backend.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
