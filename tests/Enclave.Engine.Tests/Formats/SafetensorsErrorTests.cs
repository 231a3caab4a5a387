using System.Text;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Formats;

/// <summary>Every way a checkpoint can be broken gives an error that names the file and the problem.</summary>
public sealed class SafetensorsErrorTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("enclave-st-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static byte[] File(string header, int dataBytes)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BitConverter.GetBytes((long)h.Length).CopyTo(bytes, 0);
        h.CopyTo(bytes, 8);
        return bytes;
    }

    public static TheoryData<string, byte[], string> BrokenFiles() => new()
    {
        { "empty", [], "truncated safetensors file" },
        { "header length beyond the file", BitConverter.GetBytes(1000L), "header length 1000 is invalid" },
        { "header not json", File("{not json", 0), "header is not valid JSON" },
        { "header not an object", File("[1,2]", 0), "header must be a JSON object" },
        { "missing offsets", File("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "must have dtype, shape and data_offsets" },
        { "unsupported dtype", File("{\"w\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2), "dtype I8, which is not supported" },
        { "size does not match shape", File("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "needs 12" },
        { "truncated data", File("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "truncated file" },
        { "overlapping tensors", File("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlap" },
        { "negative dimension", File("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "invalid shape" },
    };

    [Theory]
    [MemberData(nameof(BrokenFiles))]
    public void BrokenFilesAreRejectedWithTheFileNameAndReason(string name, byte[] content, string expected)
    {
        var path = Path.Combine(dir, "model.safetensors");
        System.IO.File.WriteAllBytes(path, content);
        var e = Assert.Throws<CheckpointFormatException>(() => new SafetensorsFile(path));
        Assert.Contains(path, e.Message);
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{name}: '{e.Message}' lacks '{expected}'");
    }

    [Fact]
    public void AValidFileReadsInPlace()
    {
        var bytes = File("{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8);
        var path = Path.Combine(dir, "model.safetensors");
        System.IO.File.WriteAllBytes(path, bytes);
        using var f = new SafetensorsFile(path);
        Assert.Equal([2, 2], f.Tensors["w"].Shape);
        Assert.Equal("pt", f.Metadata["format"]);
    }

    [Fact]
    public void MissingDirectoryAndMissingShardAreNamed()
    {
        Assert.Contains("not found", Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(Path.Combine(dir, "nope"))).Message);
        System.IO.File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), "{\"weight_map\":{\"w\":\"model-00001-of-00002.safetensors\"}}");
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsCheckpoint.Open(dir));
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void ShapeMismatchAgainstTheConfigNamesTensorAndBothShapes()
    {
        // Copy a fixture and lie about the hidden size in config.json.
        var source = Fixtures.Model("tiny-qwen3");
        foreach (var file in Directory.GetFiles(source))
        {
            System.IO.File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        }

        var configPath = Path.Combine(dir, "config.json");
        System.IO.File.WriteAllText(configPath, System.IO.File.ReadAllText(configPath).Replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"));
        using var weights = SafetensorsCheckpoint.Open(dir);
        var e = Assert.Throws<CheckpointFormatException>(() => ModelRegistry.Create(ModelConfig.Load(dir), weights, new ReferenceBackend()));
        Assert.Contains("gate_proj.weight", e.Message);
        Assert.Contains("[128, 64]", e.Message);
        Assert.Contains("[96, 64]", e.Message);
    }

    [Fact]
    public void UnknownArchitectureListsTheSupportedOnes()
    {
        System.IO.File.WriteAllText(Path.Combine(dir, "config.json"), "{\"architectures\":[\"GPT2LMHeadModel\"],\"hidden_size\":8,\"num_attention_heads\":2,\"num_hidden_layers\":1,\"vocab_size\":10}");
        var e = Assert.Throws<ModelConfigException>(() => ModelRegistry.EnsureSupported(ModelConfig.Load(dir)));
        Assert.Contains("GPT2LMHeadModel", e.Message);
        Assert.Contains("Qwen2ForCausalLM", e.Message);
        Assert.Contains("LlamaForCausalLM", e.Message);
    }

    [Theory]
    [InlineData("{\"architectures\":[\"LlamaForCausalLM\"]}", "'hidden_size' is missing")]
    [InlineData("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"big\"}", "'hidden_size' must be an integer")]
    [InlineData("{\"hidden_size\":8}", "'architectures' is missing")]
    [InlineData("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"num_attention_heads\":3,\"num_key_value_heads\":2,\"num_hidden_layers\":1,\"vocab_size\":4}", "must be a multiple")]
    [InlineData("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"num_attention_heads\":2,\"num_hidden_layers\":1,\"vocab_size\":4,\"rope_scaling\":{\"rope_type\":\"longrope\"}}", "'longrope' is not supported")]
    [InlineData("not json", "not valid JSON")]
    public void BadConfigsSayWhatIsWrong(string json, string expected)
    {
        System.IO.File.WriteAllText(Path.Combine(dir, "config.json"), json);
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Load(dir));
        Assert.Contains(expected, e.Message);
        Assert.Contains("config.json", e.Message);
    }
}
