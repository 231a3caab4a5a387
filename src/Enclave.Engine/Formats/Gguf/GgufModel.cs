using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Backends;
using Enclave.Engine.Models;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// A llama.cpp GGUF model file read as the engine's model inputs: the tensors under their Hugging Face names (an
/// <see cref="IWeightSource"/>), a <see cref="ModelConfig"/> built from the <c>{arch}.*</c> metadata, and the
/// tokenizer and chat template from <c>tokenizer.ggml.*</c> / <c>tokenizer.chat_template</c>.
/// Tensors stay in the mapped file in their stored type, except the query and key projections of the
/// <c>llama</c> architecture, whose rows llama.cpp's converter interleaves per head (for its rotate-pairs RoPE);
/// those rows are put back in Hugging Face order once, into memory owned here.
/// </summary>
public sealed unsafe class GgufModel : IWeightSource
{
    private static readonly Dictionary<string, string> Architectures = new(StringComparer.Ordinal)
    {
        ["llama"] = "LlamaForCausalLM",
        ["qwen2"] = "Qwen2ForCausalLM",
        ["qwen3"] = "Qwen3ForCausalLM",
    };

    private readonly GgufFile file;
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);
    private readonly List<nint> allocations = [];
    private readonly Lazy<HfTokenizer> tokenizer;

    private GgufModel(GgufFile file)
    {
        this.file = file;
        Architecture = file.GetString("general.architecture")
            ?? throw new CheckpointFormatException($"{file.Path}: metadata 'general.architecture' is missing");
        if (!Architectures.ContainsKey(Architecture))
        {
            throw new CheckpointFormatException(
                $"{file.Path}: architecture '{Architecture}' is not supported for GGUF files (supported: {string.Join(", ", Architectures.Keys)})");
        }

        Config = BuildConfig();

        // Built on first use: a benchmark needs no tokenizer, and a 150k-token vocabulary costs time and memory.
        tokenizer = new Lazy<HfTokenizer>(() => GgufTokenizer.Build(file));
        foreach (var t in file.Tensors)
        {
            var hf = GgufNames.ToHf(t.Name);
            if (hf is null)
            {
                continue;
            }

            tensors[hf] = Architecture == "llama" && (t.Name.EndsWith(".attn_q.weight", StringComparison.Ordinal) || t.Name.EndsWith(".attn_k.weight", StringComparison.Ordinal))
                ? Unpermute(t, hf, t.Name.EndsWith(".attn_q.weight", StringComparison.Ordinal) ? Config.NumAttentionHeads : Config.NumKeyValueHeads)
                : new CheckpointTensor(hf, t.DType, t.Shape, t.Data, t.ByteCount, t.File);
        }
    }

    public string Path => file.Path;

    /// <summary>general.architecture: llama, qwen2 or qwen3.</summary>
    public string Architecture { get; }

    public ModelConfig Config { get; }

    /// <summary>The embedded tokenizer; throws <see cref="CheckpointFormatException"/> when the file carries none or an unsupported one.</summary>
    public HfTokenizer Tokenizer => tokenizer.Value;

    public GgufFile File => file;

    public string Description => file.Path;

    public IEnumerable<string> TensorNames => tensors.Keys;

    public static bool IsGgufPath(string path) =>
        path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) && System.IO.File.Exists(path);

    public static GgufModel Open(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return new GgufModel(file);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or ModelConfigException or ArgumentException)
        {
            file.Dispose();
            throw new CheckpointFormatException($"{path}: {e.Message}", e);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => tensors.ContainsKey(name);

    public CheckpointTensor Get(string name) =>
        tensors.TryGetValue(name, out var t) ? t : throw new CheckpointFormatException($"{file.Path}: tensor '{name}' ({GgufNames.ToGguf(name)}) is missing from the GGUF file");

    private ModelConfig BuildConfig()
    {
        var a = Architecture;
        long Required(string key) => file.GetInteger($"{a}.{key}") ?? throw new CheckpointFormatException($"{file.Path}: metadata '{a}.{key}' is missing");
        var hidden = Required("embedding_length");
        var heads = Required("attention.head_count");
        var tokens = file.GetArray("tokenizer.ggml.tokens");
        var vocab = file.GetInteger($"{a}.vocab_size") ?? tokens?.Count
            ?? (file.ContainsTensor("token_embd.weight") ? file.GetTensor("token_embd.weight").Shape[0] : throw new CheckpointFormatException($"{file.Path}: cannot tell the vocabulary size"));
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(Architectures[a]),
            ["model_type"] = a,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Required("feed_forward_length"),
            ["num_hidden_layers"] = Required("block_count"),
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = file.GetInteger($"{a}.attention.head_count_kv") ?? heads,
            ["head_dim"] = file.GetInteger($"{a}.attention.key_length") ?? hidden / heads,
            ["vocab_size"] = vocab,
            ["rms_norm_eps"] = file.GetFloat($"{a}.attention.layer_norm_rms_epsilon") ?? 1e-6,
            ["max_position_embeddings"] = file.GetInteger($"{a}.context_length") ?? 2048,
            ["tie_word_embeddings"] = !file.ContainsTensor("output.weight"),
            ["attention_bias"] = file.ContainsTensor("blk.0.attn_q.bias"),
            ["rope_theta"] = file.GetFloat($"{a}.rope.freq_base") ?? 10000.0,
        };
        if (file.GetInteger("tokenizer.ggml.bos_token_id") is { } bos)
        {
            json["bos_token_id"] = bos;
        }

        if (file.GetInteger("tokenizer.ggml.eos_token_id") is { } eos)
        {
            json["eos_token_id"] = eos;
        }

        var scaling = file.GetString($"{a}.rope.scaling.type");
        if (scaling is "linear" or "yarn")
        {
            var rope = new JsonObject
            {
                ["rope_type"] = scaling,
                ["factor"] = file.GetFloat($"{a}.rope.scaling.factor") ?? 1.0,
            };
            if (file.GetInteger($"{a}.rope.scaling.original_context_length") is { } original)
            {
                rope["original_max_position_embeddings"] = original;
            }

            json["rope_scaling"] = rope;
        }
        else if (scaling is not null and not "none")
        {
            throw new CheckpointFormatException($"{file.Path}: rope scaling type '{scaling}' is not supported");
        }

        var config = ModelConfig.Parse(json, file.Path);
        if (file.ContainsTensor("rope_freqs.weight"))
        {
            // Llama 3's frequency-dependent scaling, stored by llama.cpp as one divisor per rotary frequency.
            var factors = file.GetTensor("rope_freqs.weight");
            if (factors.DType != DType.F32 || factors.ElementCount != config.HeadDim / 2)
            {
                throw new CheckpointFormatException($"{file.Path}: rope_freqs.weight is {factors}, expected F32[{config.HeadDim / 2}]");
            }

            config.RopeFrequencyFactors = MemoryMarshal.Cast<byte, float>(factors.Bytes).ToArray();
        }

        return config;
    }

    /// <summary>
    /// llama.cpp's converter stores each head's rows as (pair index, half) where HF has (half, pair index):
    /// GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i. Rows are whole blocks, so this works for every type.
    /// </summary>
    private CheckpointTensor Unpermute(CheckpointTensor t, string hfName, int heads)
    {
        if (t.Shape.Length != 2 || t.Shape[0] % heads != 0 || t.Shape[0] / heads % 2 != 0)
        {
            throw new CheckpointFormatException($"{file.Path}: tensor '{t.Name}' {t} cannot hold {heads} heads");
        }

        var rows = t.Shape[0];
        var headDim = rows / heads;
        var half = headDim / 2;
        var rowBytes = t.ByteCount / rows;
        var data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(t.ByteCount, 64), 64);
        allocations.Add((nint)data);
        for (var h = 0; h < heads; h++)
        {
            for (var i = 0; i < half; i++)
            {
                for (var j = 0; j < 2; j++)
                {
                    var source = t.Data + (((long)h * headDim) + (2 * i) + j) * rowBytes;
                    var destination = data + (((long)h * headDim) + (j * half) + i) * rowBytes;
                    Buffer.MemoryCopy(source, destination, rowBytes, rowBytes);
                }
            }
        }

        return new CheckpointTensor(hfName, t.DType, t.Shape, data, t.ByteCount, t.File);
    }

    public void Dispose()
    {
        foreach (var p in allocations)
        {
            NativeMemory.AlignedFree((void*)p);
        }

        allocations.Clear();
        file.Dispose();
    }
}
