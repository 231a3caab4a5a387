using System.Text.Json;

namespace Enclave.Engine.Formats;

/// <summary>
/// A Hugging Face checkpoint directory: a single <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>'s weight_map. All shards are memory-mapped; tensors are read in place.
/// </summary>
public sealed class SafetensorsCheckpoint : IWeightSource
{
    private readonly List<SafetensorsFile> files = [];
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);

    private SafetensorsCheckpoint(string directory) => Directory = directory;

    public string Directory { get; }

    public string Description => Directory;

    public IEnumerable<string> TensorNames => tensors.Keys;

    public long TotalBytes { get; private set; }

    public static SafetensorsCheckpoint Open(string directory)
    {
        var checkpoint = new SafetensorsCheckpoint(directory);
        try
        {
            checkpoint.Load();
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }

        return checkpoint;
    }

    private void Load()
    {
        var index = Path.Combine(Directory, "model.safetensors.index.json");
        var single = Path.Combine(Directory, "model.safetensors");
        IEnumerable<string> shardNames;
        Dictionary<string, string>? weightMap = null;
        if (File.Exists(index))
        {
            weightMap = ReadWeightMap(index);
            shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
        }
        else if (File.Exists(single))
        {
            shardNames = ["model.safetensors"];
        }
        else
        {
            var any = System.IO.Directory.Exists(Directory)
                ? System.IO.Directory.GetFiles(Directory, "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()
                : throw new CheckpointFormatException($"{Directory}: model directory not found");
            if (any.Length == 0)
            {
                throw new CheckpointFormatException(
                    $"{Directory}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)");
            }

            shardNames = any!;
        }

        foreach (var shard in shardNames)
        {
            var file = new SafetensorsFile(Path.Combine(Directory, shard));
            files.Add(file);
            foreach (var (name, tensor) in file.Tensors)
            {
                if (weightMap is not null && weightMap.TryGetValue(name, out var expectedShard) && expectedShard != shard)
                {
                    continue;
                }

                if (!tensors.TryAdd(name, tensor))
                {
                    throw new CheckpointFormatException($"{file.Path}: tensor '{name}' is also stored in {tensors[name].File}");
                }

                TotalBytes += tensor.ByteCount;
            }
        }

        if (weightMap is not null)
        {
            foreach (var (name, shard) in weightMap)
            {
                if (!tensors.ContainsKey(name))
                {
                    throw new CheckpointFormatException($"{index}: lists tensor '{name}' in {shard}, but that file does not contain it");
                }
            }
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointFormatException($"{index}: missing the weight_map object");
            }

            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                var shard = p.Value.GetString();
                if (string.IsNullOrEmpty(shard) || shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                {
                    throw new CheckpointFormatException($"{index}: tensor '{p.Name}' maps to an invalid file name '{shard}'");
                }

                result[p.Name] = shard;
            }

            return result;
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"{index}: not valid JSON ({e.Message})", e);
        }
    }

    public bool Contains(string name) => tensors.ContainsKey(name);

    public CheckpointTensor Get(string name) =>
        tensors.TryGetValue(name, out var t)
            ? t
            : throw new CheckpointFormatException($"{Directory}: tensor '{name}' is missing from the checkpoint");

    public void Dispose()
    {
        foreach (var f in files)
        {
            f.Dispose();
        }

        files.Clear();
    }
}
