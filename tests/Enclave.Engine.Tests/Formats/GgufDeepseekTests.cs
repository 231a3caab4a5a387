using System.Text.Json.Nodes;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Formats.Gguf;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Tests.Models;
using Enclave.Engine.Tests.Support;
using Xunit;

namespace Enclave.Engine.Tests.Formats;

/// <summary>
/// DeepSeek-V2/V3 checkpoints written as llama.cpp's deepseek2 GGUF layout (stacked experts, split attn_k_b/attn_v_b,
/// deepseek2.* metadata) and read back: the same model as the safetensors checkpoint, step by step.
/// </summary>
public sealed class GgufDeepseekTests : IDisposable
{
    private readonly GgufModelTests.TempFolder temp = new();

    public void Dispose() => temp.Dispose();

    private string Write(string modelDirectory, string target, string fileName)
    {
        var config = ModelConfig.Load(modelDirectory);
        using var weights = SafetensorsCheckpoint.Open(modelDirectory);
        var path = Path.Combine(temp.Path, fileName);
        GgufExport.Write(config, weights, modelDirectory, target, path, Path.GetFileName(modelDirectory));
        return path;
    }

    public static TheoryData<string, string> ModelsAndTypes()
    {
        var data = new TheoryData<string, string>();
        foreach (var m in new[] { "tiny-deepseek-v3", "tiny-deepseek-v2-lite" })
        {
            foreach (var t in new[] { "f32", "f16", "q8_0" })
            {
                data.Add(m, t);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ModelsAndTypes))]
    public void Logits_and_greedy_tokens_match_the_safetensors_model(string modelName, string target)
    {
        var dir = Fixtures.Model(modelName);
        var path = Write(dir, target, $"{modelName}-{target}.gguf");
        var config = ModelConfig.Load(dir);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var gguf = GgufModel.Open(path);
        using var backend = new CpuBackend(2);
        if (target != "q8_0")
        {
            // F32 files hold every weight exactly; so do F16 files of a BF16 checkpoint (tiny-deepseek-v3: 8 mantissa
            // bits fit in 10, and its weights are far from F16's range limits). tiny-deepseek-v2-lite is F32, rounded
            // to F16 here (2^-11 relative per weight).
            var tolerance = target == "f32" || config.DType == "bfloat16" ? 1e-4 : 5e-3;
            var (worst, agreed, steps) = Compare(config, weights, gguf, backend);
            Assert.True(worst <= tolerance, $"{modelName}/{target}: max logit error {worst} of the largest logit");
            Assert.Equal(steps, agreed);
            return;
        }

        // Q8_0 keeps each weight within half a step of max|w|/127 of its block and the CPU products quantise
        // activations to int8 per block of 32. These tiny random MoE models amplify that: a router score that moves
        // past another expert's swaps whole experts (tiny-deepseek-v3 picks one of two expert groups, then two
        // experts in it). Measured: prefill logits within 5-11% of the largest; later steps up to 73% when experts
        // flip (even with fp32 activations on the reference backend), 13 and 21 of 24 greedy tokens agreeing. So
        // the prefill logits are held to the quantisation's tolerance and the placement of every quantised weight
        // is checked exactly below.
        var (prefill, agreedTokens, total) = Compare(config, weights, gguf, backend, prefillOnly: true);
        Assert.True(prefill <= 0.15, $"{modelName}/q8_0: prefill logit error {prefill} of the largest logit");
        Assert.True(agreedTokens >= total / 2, $"{modelName}/q8_0: {agreedTokens} of {total} greedy tokens agree");

        // The Q8_0 file's weights, dequantised into an F32 file, give the same model on the reference backend (which
        // multiplies dequantised Q8_0 weights with fp32 activations) to rounding.
        var dequantised = Path.Combine(temp.Path, $"{modelName}-q8_0-as-f32.gguf");
        GgufExport.Write(gguf.Config, gguf, dir, "f32", dequantised, modelName);
        using var f32 = GgufModel.Open(dequantised);
        using var reference = new Enclave.Engine.Backends.Reference.ReferenceBackend();
        var (exact, agreedExactly, count) = Compare(f32.Config, f32, gguf, reference);
        Assert.True(exact <= 1e-4, $"{modelName}/q8_0 against its dequantised weights: max logit error {exact} of the largest logit");
        Assert.Equal(count, agreedExactly);
    }

    /// <summary>
    /// Greedy decoding with the expected model over two prompts, 12 steps each; the GGUF model gets the same tokens
    /// (teacher forcing). Returns the largest logit error relative to the largest logit (of the prefill steps only
    /// when <paramref name="prefillOnly"/>), and on how many steps, of how many, the argmax agreed.
    /// </summary>
    private static (double Worst, int Agreed, int Steps) Compare(ModelConfig config, IWeightSource weights, GgufModel gguf, IBackend backend, bool prefillOnly = false)
    {
        Assert.Equal(config.Architecture, gguf.Config.Architecture);
        using var expectedModel = ModelRegistry.Create(config, weights, backend);
        using var actualModel = ModelRegistry.Create(gguf.Config, gguf, backend);
        var (worst, agreed, steps) = (0.0, 0, 0);
        foreach (var prompt in new[] { new[] { 994, 17, 256, 3, 801, 42 }, new[] { 5, 6, 7, 8, 9, 10, 11, 12, 13 } })
        {
            using var expectedCache = new PagedKvCache(backend, expectedModel.KvCacheSpec, 16, 4);
            using var actualCache = new PagedKvCache(backend, actualModel.KvCacheSpec, 16, 4);
            var expectedPool = new BlockPool(expectedCache.BlockCount, 4);
            var actualPool = new BlockPool(actualCache.BlockCount, 4);
            List<int> expectedTable = [], actualTable = [];
            using var logits = backend.Allocate(DType.F32, 1, config.VocabSize);
            var expected = new float[config.VocabSize];
            var actual = new float[config.VocabSize];
            var tokens = new List<int>(prompt);
            var computed = 0;
            for (var step = 0; step < 12; step++)
            {
                expectedModel.Forward(ForwardParityTests.SingleSequenceBatch(tokens, computed, expectedPool, expectedTable), expectedCache, logits);
                backend.Download(logits, expected);
                actualModel.Forward(ForwardParityTests.SingleSequenceBatch(tokens, computed, actualPool, actualTable), actualCache, logits);
                backend.Download(logits, actual);
                computed = tokens.Count;
                if (step == 0 || !prefillOnly)
                {
                    var scale = Math.Max(1, expected.Max(Math.Abs));
                    worst = Math.Max(worst, expected.Select((v, i) => Math.Abs(v - actual[i])).Max() / scale);
                }

                var next = ForwardParityTests.ArgMax(expected);
                agreed += next == ForwardParityTests.ArgMax(actual) ? 1 : 0;
                steps++;
                tokens.Add(next); // teacher forcing keeps both models on the same sequence
            }
        }

        return (worst, agreed, steps);
    }

    private static void AssertSameModel(string dir, string ggufPath, string label)
    {
        var config = ModelConfig.Load(dir);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var gguf = GgufModel.Open(ggufPath);
        using var backend = new CpuBackend(2);
        var (worst, agreed, steps) = Compare(config, weights, gguf, backend);
        Assert.True(worst <= 1e-4, $"{label}: max logit error {worst} of the largest logit");
        Assert.Equal(steps, agreed);
    }

    [Theory]
    [InlineData("tiny-deepseek-v3")]
    [InlineData("tiny-deepseek-v2-lite")]
    public void Metadata_round_trips_to_the_same_config(string modelName)
    {
        var dir = Fixtures.Model(modelName);
        var expected = ModelConfig.Load(dir);
        var v3 = expected.Architecture == "DeepseekV3ForCausalLM";
        var path = Write(dir, "q8_0", $"{modelName}.gguf");
        using (var file = GgufFile.Open(path))
        {
            // As llama.cpp's converter writes them.
            Assert.Equal("deepseek2", file.GetString("general.architecture"));
            Assert.Equal(1, file.GetInteger("deepseek2.attention.head_count_kv"));
            Assert.Equal(32 + 8, file.GetInteger("deepseek2.attention.key_length"));
            Assert.Equal(32, file.GetInteger("deepseek2.attention.value_length"));
            Assert.Equal(24, file.GetInteger("deepseek2.attention.key_length_mla"));
            Assert.Equal(24, file.GetInteger("deepseek2.attention.value_length_mla"));
            Assert.Equal(8, file.GetInteger("deepseek2.rope.dimension_count"));
            Assert.Equal(v3 ? 32 : null, file.GetInteger("deepseek2.attention.q_lora_rank"));
            Assert.Equal(8, file.GetInteger("deepseek2.expert_count"));
            Assert.Equal(2, file.GetInteger("deepseek2.expert_used_count"));
            Assert.Equal(v3 ? 1 : 2, file.GetInteger("deepseek2.expert_shared_count"));
            Assert.Equal(v3 ? 2 : 1, file.GetInteger("deepseek2.expert_gating_func"));
            Assert.Equal(1, file.GetInteger("deepseek2.leading_dense_block_count"));
            Assert.Equal("yarn", file.GetString("deepseek2.rope.scaling.type"));
            Assert.Equal(0.1 * (v3 ? 0.8 : 0.707), file.GetFloat("deepseek2.rope.scaling.yarn_log_multiplier")!.Value, 6);
            // tiny-deepseek-v3's mscale (1.0) differs from its mscale_all_dim (0.8), which llama.cpp cannot express.
            Assert.Equal(v3 ? 1.0 : null, file.GetFloat(GgufModel.DeepseekMscaleKey));
            Assert.Equal([8, 32, 64], file.GetTensor("blk.1.ffn_gate_exps.weight").Shape);
            Assert.Equal([8, 64, 32], file.GetTensor("blk.1.ffn_down_exps.weight").Shape);
            Assert.Equal([4, 32, 16], file.GetTensor("blk.0.attn_k_b.weight").Shape);
            Assert.Equal([4, 24, 32], file.GetTensor("blk.0.attn_v_b.weight").Shape);
            Assert.False(file.ContainsTensor("blk.0.attn_kv_b.weight"));
            Assert.Equal(v3, file.ContainsTensor("blk.1.exp_probs_b.bias"));
            Assert.False(file.ContainsTensor("blk.0.ffn_gate_inp.weight")); // layer 0 is dense
            Assert.Equal(DType.F32, file.GetTensor("blk.1.ffn_gate_inp.weight").DType);
            Assert.Equal(DType.Q8_0, file.GetTensor("blk.1.ffn_up_exps.weight").DType);
            Assert.Equal(DType.F16, file.GetTensor("blk.0.attn_k_b.weight").DType); // 16-wide rows are not whole Q8_0 blocks
        }

        using var gguf = GgufModel.Open(path);
        var actual = gguf.Config;
        Assert.Equal(expected.Architecture, actual.Architecture);
        Assert.Equal(expected.HiddenSize, actual.HiddenSize);
        Assert.Equal(expected.IntermediateSize, actual.IntermediateSize);
        Assert.Equal(expected.NumHiddenLayers, actual.NumHiddenLayers);
        Assert.Equal(expected.NumAttentionHeads, actual.NumAttentionHeads);
        Assert.Equal(expected.NumKeyValueHeads, actual.NumKeyValueHeads);
        Assert.Equal(expected.VocabSize, actual.VocabSize);
        Assert.Equal(expected.MaxPositionEmbeddings, actual.MaxPositionEmbeddings);
        Assert.Equal(expected.RmsNormEps, actual.RmsNormEps, 1e-12);
        Assert.Equal(expected.RopeTheta, actual.RopeTheta);
        Assert.Equal(expected.TieWordEmbeddings, actual.TieWordEmbeddings);
        Assert.Equal(DeepseekConfig.Parse(expected, v3), DeepseekConfig.Parse(actual, v3));

        // The rotary frequencies, YaRN's rope amplitude and the softmax scale (mscale_all_dim²) come out the same.
        var ds = DeepseekConfig.Parse(expected, v3);
        var expectedRope = RotaryEmbedding.Create(expected, ds.QkRopeHeadDim, true);
        var actualRope = RotaryEmbedding.Create(actual, ds.QkRopeHeadDim, true);
        Assert.Equal(expectedRope.InverseFrequencies, actualRope.InverseFrequencies);
        Assert.Equal(expectedRope.AttentionScaling, actualRope.AttentionScaling, 1e-6f);
        Assert.Equal(DeepseekStyleModel.SoftmaxScale(expected, ds), DeepseekStyleModel.SoftmaxScale(actual, ds), 1e-6f);
    }

    [Theory]
    [InlineData("tiny-deepseek-v3")]
    [InlineData("tiny-deepseek-v2-lite")]
    public void Embedded_tokenizer_and_template_match_the_directory(string modelName)
    {
        var dir = Fixtures.Model(modelName);
        using var gguf = GgufModel.Open(Write(dir, "q8_0", $"{modelName}-tokenizer.gguf"));
        var expected = Enclave.Engine.Tokenization.HfTokenizer.FromDirectory(dir);
        foreach (var text in new[] { "Hello  world!\n\n  123456 tokens, naïve café", "<think>x</think> 日本語" })
        {
            Assert.Equal(expected.Encode(text, addSpecialTokens: true), gguf.Tokenizer.Encode(text, addSpecialTokens: true));
        }

        foreach (var c in Fixtures.LoadReference(modelName).Cases.Where(c => c.Rendered is not null))
        {
            Assert.Equal(c.PromptIds, gguf.Tokenizer.Encode(c.Rendered!));
        }

        Assert.Equal(expected.Config.ChatTemplate, gguf.Tokenizer.Config.ChatTemplate);
        Assert.Equal(expected.EosTokenId, gguf.Tokenizer.EosTokenId);
    }

    [Fact]
    public void A_deepseek_v3_pre_tokenizer_is_written_as_llama_cpps_deepseek_v3_and_read_back_the_same()
    {
        // DeepSeek-V3/R1's tokenizer.json splits three times in sequence (digits in threes, CJK and kana runs, words and
        // punctuation) before the byte-level step; llama.cpp calls that pre-tokenizer "deepseek-v3".
        var source = Fixtures.Model("tiny-deepseek-v3");
        var dir = Path.Combine(temp.Path, "tiny-deepseek-v3-tokenizer");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source))
        {
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        }

        var tokenizerPath = Path.Combine(dir, "tokenizer.json");
        var tokenizer = JsonNode.Parse(File.ReadAllText(tokenizerPath))!.AsObject();
        JsonObject Split(string regex) => new()
        {
            ["type"] = "Split",
            ["pattern"] = new JsonObject { ["Regex"] = regex },
            ["behavior"] = "Isolated",
            ["invert"] = false,
        };
        tokenizer["normalizer"] = null;
        tokenizer["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                Split(@"\p{N}{1,3}"),
                Split("[一-龥぀-ゟ゠-ヿ]+"),
                Split(@"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        };
        File.WriteAllText(tokenizerPath, tokenizer.ToJsonString());

        var path = Write(dir, "q8_0", "tokenizer-v3.gguf");
        using (var file = GgufFile.Open(path))
        {
            Assert.Equal("deepseek-v3", file.GetString("tokenizer.ggml.pre"));
        }

        using var gguf = GgufModel.Open(path);
        var expected = Enclave.Engine.Tokenization.HfTokenizer.FromDirectory(dir);
        foreach (var text in new[] { "Numbers 1234567 and 3.14159!", "日本語のテキスト、カタカナ", "!Hello,world\r\n\n  x", "naïve café -- e.g. 'quoted' «aaaa»" })
        {
            var ids = expected.Encode(text);
            Assert.Equal(ids, gguf.Tokenizer.Encode(text));
            Assert.Equal(text, gguf.Tokenizer.Decode(ids));
        }

        // Only the whole sequence has a llama.cpp name: without the digit split it is refused, not guessed.
        tokenizer["pre_tokenizer"]!["pretokenizers"]!.AsArray().RemoveAt(0);
        File.WriteAllText(tokenizerPath, tokenizer.ToJsonString());
        var e = Assert.Throws<NotSupportedException>(() => Write(dir, "q8_0", "tokenizer-partial.gguf"));
        Assert.Contains("no llama.cpp pre-tokenizer name", e.Message);
    }

    [Fact]
    public void Each_routed_expert_is_a_view_into_its_stacked_tensor()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3");
        var path = Write(dir, "f32", "experts.gguf");
        using var checkpoint = SafetensorsCheckpoint.Open(dir);
        using var file = GgufFile.Open(path);
        using var gguf = GgufModel.Open(path);
        var stacked = file.GetTensor("blk.2.ffn_up_exps.weight");
        for (var e = 0; e < 8; e++)
        {
            var name = $"model.layers.2.mlp.experts.{e}.up_proj.weight";
            var view = gguf.Get(name);
            Assert.Equal([32, 64], view.Shape);
            Assert.Equal(stacked.ByteCount / 8, view.ByteCount);
            unsafe
            {
                // No copy: the view points into the mapped file at the expert's offset.
                var offset = view.Data - gguf.File.GetTensor("blk.2.ffn_up_exps.weight").Data;
                Assert.Equal(e * (stacked.ByteCount / 8), offset);
            }

            Assert.Equal(Rows(checkpoint.Get(name)), Rows(view));
            Assert.Equal(("blk.2.ffn_up_exps.weight", e), GgufNames.ExpertStack(name));
        }

        Assert.True(gguf.Contains("model.layers.1.mlp.gate.e_score_correction_bias"));
        Assert.Equal(Rows(checkpoint.Get("model.layers.1.mlp.gate.e_score_correction_bias")), Rows(gguf.Get("model.layers.1.mlp.gate.e_score_correction_bias")));
    }

    [Fact]
    public void Split_attn_k_b_and_attn_v_b_are_joined_back_into_the_checkpoints_kv_b_proj()
    {
        var dir = Fixtures.Model("tiny-deepseek-v2-lite");
        var path = Write(dir, "f32", "split.gguf");
        using var checkpoint = SafetensorsCheckpoint.Open(dir);
        using var gguf = GgufModel.Open(path);
        for (var layer = 0; layer < 3; layer++)
        {
            var name = $"model.layers.{layer}.self_attn.kv_b_proj.weight";
            Assert.Equal(checkpoint.Get(name).Shape, gguf.Get(name).Shape);
            Assert.Equal(Rows(checkpoint.Get(name)), Rows(gguf.Get(name)));
        }
    }

    [Fact]
    public void Files_with_the_older_single_attn_kv_b_layout_give_the_same_model()
    {
        // llama.cpp's converter wrote kv_b_proj whole (attn_kv_b) and per-head widths under key_length/value_length
        // before its MLA layout; such files are rebuilt here from a split one and must run identically.
        var dir = Fixtures.Model("tiny-deepseek-v3");
        var split = Write(dir, "f32", "split-v3.gguf");
        var legacy = Path.Combine(temp.Path, "legacy-v3.gguf");
        using (var checkpoint = SafetensorsCheckpoint.Open(dir))
        using (var file = GgufFile.Open(split))
        {
            var writer = new GgufWriter();
            foreach (var m in file.Metadata)
            {
                switch (m.Key)
                {
                    case "deepseek2.attention.key_length_mla" or "deepseek2.attention.value_length_mla":
                        continue;
                    case "deepseek2.attention.head_count_kv":
                        writer.AddUInt32(m.Key, 4);
                        continue;
                    case "deepseek2.attention.key_length":
                        writer.AddUInt32(m.Key, 24);
                        continue;
                    case "deepseek2.attention.value_length":
                        writer.AddUInt32(m.Key, 24);
                        continue;
                    default:
                        writer.Add(m.Key, m.Type, m.Value);
                        continue;
                }
            }

            foreach (var t in file.Tensors)
            {
                if (t.Name.EndsWith(".attn_v_b.weight", StringComparison.Ordinal))
                {
                    continue;
                }

                if (t.Name.EndsWith(".attn_k_b.weight", StringComparison.Ordinal))
                {
                    var layer = t.Name.Split('.')[1];
                    var kvB = checkpoint.Get($"model.layers.{layer}.self_attn.kv_b_proj.weight");
                    var values = Rows(kvB);
                    writer.AddTensor($"blk.{layer}.attn_kv_b.weight", DType.F32, kvB.Shape,
                        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
                    continue;
                }

                writer.AddTensor(t.Name, t.DType, t.Shape, t.Bytes.ToArray());
            }

            writer.Write(legacy);
        }

        using (var gguf = GgufModel.Open(legacy))
        {
            Assert.Equal(4, gguf.Config.NumKeyValueHeads);
            Assert.Equal(16, gguf.Config.Raw["qk_nope_head_dim"]!.GetValue<long>());
            Assert.Equal(24, gguf.Config.Raw["v_head_dim"]!.GetValue<long>());
        }

        AssertSameModel(dir, legacy, "legacy attn_kv_b");
    }

    [Fact]
    public void A_file_with_attn_k_b_but_no_attn_v_b_is_refused_with_a_clear_message()
    {
        var split = Write(Fixtures.Model("tiny-deepseek-v2-lite"), "f32", "full.gguf");
        var broken = Path.Combine(temp.Path, "broken.gguf");
        using (var file = GgufFile.Open(split))
        {
            var writer = new GgufWriter();
            foreach (var m in file.Metadata)
            {
                writer.Add(m.Key, m.Type, m.Value);
            }

            foreach (var t in file.Tensors.Where(t => t.Name != "blk.1.attn_v_b.weight"))
            {
                writer.AddTensor(t.Name, t.DType, t.Shape, t.Bytes.ToArray());
            }

            writer.Write(broken);
        }

        var e = Assert.Throws<CheckpointFormatException>(() => GgufModel.Open(broken));
        Assert.Contains("layer 1 has only one of attn_k_b and attn_v_b", e.Message);
    }

    [Fact]
    public void A_v3_checkpoint_rotating_halves_is_stored_with_interleaved_rope_rows_and_runs_the_same()
    {
        // rope_interleave false: the checkpoint's rope rows rotate (first half, second half) pairs; llama.cpp rotates
        // adjacent pairs, so the exporter interleaves the rope rows of q_b_proj and kv_a_proj_with_mqa.
        var source = Fixtures.Model("tiny-deepseek-v3");
        var dir = Path.Combine(temp.Path, "tiny-deepseek-v3-halves");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source))
        {
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        }

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        json["rope_interleave"] = false;
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
        var path = Write(dir, "f32", "halves.gguf");
        using (var checkpoint = SafetensorsCheckpoint.Open(dir))
        using (var file = GgufFile.Open(path))
        {
            // Head 0's first rope row (16) stays; GGUF row 17 holds the checkpoint's row 16 + 4 (rope 8, half 4).
            var hf = Rows(checkpoint.Get("model.layers.0.self_attn.q_b_proj.weight"));
            var stored = Rows(file.GetTensor("blk.0.attn_q_b.weight"));
            Assert.Equal(hf.AsSpan(16 * 32, 32).ToArray(), stored.AsSpan(16 * 32, 32).ToArray());
            Assert.Equal(hf.AsSpan(20 * 32, 32).ToArray(), stored.AsSpan(17 * 32, 32).ToArray());
        }

        using (var gguf = GgufModel.Open(path))
        {
            Assert.True((bool)gguf.Config.Raw["rope_interleave"]!);
        }

        AssertSameModel(dir, path, "rope halves");
    }

    [Fact]
    public void Dummy_weights_of_a_deepseek_config_export_and_run_with_q8_0()
    {
        var config = ModelConfig.Load(Fixtures.Model("tiny-deepseek-v3"));
        using var dummy = DummyWeights.Create(config);
        var path = Path.Combine(temp.Path, "dummy.gguf");
        GgufExport.Write(config, dummy, null, "q8_0", path, "dummy");
        using var gguf = GgufModel.Open(path);
        Assert.Equal(DType.Q8_0, gguf.Get("model.layers.2.mlp.experts.7.down_proj.weight").DType);
        using var backend = new CpuBackend(2);
        using var model = ModelRegistry.Create(gguf.Config, gguf, backend);
        using var cache = new PagedKvCache(backend, model.KvCacheSpec, 4, 4);
        var pool = new BlockPool(cache.BlockCount, 4);
        using var logits = backend.Allocate(DType.F32, 1, config.VocabSize);
        model.Forward(ForwardParityTests.SingleSequenceBatch([1, 2, 3], 0, pool, []), cache, logits);
        var host = new float[config.VocabSize];
        backend.Download(logits, host);
        Assert.All(host, v => Assert.True(float.IsFinite(v)));
        Assert.True(host.Max() > host.Min());
    }

    [Fact]
    public void K_quant_mixtures_give_routed_and_shared_ffn_down_more_bits_in_the_same_layers_as_llama_cpp()
    {
        // 256-wide rows, so the matrices are whole K-quant blocks; 8 layers: use_more_bits picks layers 0, 3, 6 and 7.
        var config = ModelConfig.Parse(JsonNode.Parse("""
            {"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 8,
             "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64, "rms_norm_eps": 1e-6, "max_position_embeddings": 64,
             "q_lora_rank": 256, "kv_lora_rank": 256, "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32,
             "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "moe_intermediate_size": 256,
             "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "tie_word_embeddings": false, "rope_theta": 10000.0}
            """)!.AsObject(), "test-config.json");
        using var dummy = DummyWeights.Create(config);
        var path = Path.Combine(temp.Path, "k.gguf");
        GgufExport.Write(config, dummy, null, "q4_k_m", path, "k");
        using var file = GgufFile.Open(path);
        Assert.Equal(DType.Q6_K, file.GetTensor("blk.0.ffn_down.weight").DType);
        foreach (var layer in new[] { 3, 6, 7 })
        {
            Assert.Equal(DType.Q6_K, file.GetTensor($"blk.{layer}.ffn_down_exps.weight").DType);
            Assert.Equal(DType.Q6_K, file.GetTensor($"blk.{layer}.ffn_down_shexp.weight").DType);
        }

        Assert.Equal(DType.Q4_K, file.GetTensor("blk.4.ffn_down_exps.weight").DType);
        Assert.Equal(DType.Q4_K, file.GetTensor("blk.4.ffn_up_exps.weight").DType);
        Assert.Equal(DType.Q4_K, file.GetTensor("blk.4.attn_q_b.weight").DType);
        Assert.Equal(DType.F32, file.GetTensor("blk.4.ffn_gate_inp.weight").DType);
        Assert.Equal(DType.Q5_0, file.GetTensor("blk.4.attn_k_b.weight").DType); // 32-wide rows: llama.cpp's Q5_0 fallback for Q4_K
        using var gguf = GgufModel.Open(path);
        Assert.Equal(DType.Q6_K, gguf.Get("model.layers.3.mlp.experts.2.down_proj.weight").DType);
        Assert.Equal([256, 256], gguf.Get("model.layers.3.mlp.experts.2.down_proj.weight").Shape);
    }

    [Fact]
    public void A_quantised_checkpoint_is_refused_with_a_clear_message()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3-fp8");
        var e = Assert.Throws<NotSupportedException>(() => Write(dir, "q8_0", "fp8.gguf"));
        Assert.Contains("Fp8Block checkpoint cannot be written to GGUF", e.Message);
    }

    private static float[] Rows(CheckpointTensor t)
    {
        var columns = t.Shape[^1];
        var rows = (int)(t.ElementCount / columns);
        var values = new float[t.ElementCount];
        for (var r = 0; r < rows; r++)
        {
            GgufExport.ReadRow(t, r, values.AsSpan(r * columns, columns));
        }

        return values;
    }
}
