using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace Enclave.Operations.Registry;

/// <summary>One file of an installed model as recorded at install time.</summary>
public sealed record ModelFileRecord(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("sha256")] string Sha256);

/// <summary>What the store knows about an installed model: where it came from and the hash of every file.</summary>
public sealed record ModelRecord
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("source")] public string? Source { get; init; }
    [JsonPropertyName("repo")] public string? Repo { get; init; }
    [JsonPropertyName("revision")] public string? Revision { get; init; }
    [JsonPropertyName("commit")] public string? Commit { get; init; }
    [JsonPropertyName("installed_at")] public required DateTimeOffset InstalledAt { get; init; }
    /// <summary>Null for plaintext weights; the algorithm name when <c>models encrypt</c> has run.</summary>
    [JsonPropertyName("encryption")] public string? Encryption { get; init; }
    [JsonPropertyName("files")] public required IReadOnlyList<ModelFileRecord> Files { get; init; }

    [JsonIgnore] public long TotalBytes => Files.Sum(f => f.Size);
}

public sealed record VerifyProblem(string Path, string Message);

/// <summary>A file whose bytes do not match the hash the registry, hub or bundle recorded for it.</summary>
public sealed class ModelIntegrityException(string message) : IOException(message);

/// <summary>
/// The local model store: <c>ENCLAVE_HOME/models/NAME/</c> holds the model's files and <c>.enclave-model.json</c>
/// (provenance plus SHA-256 of every file). Installs arrive complete through <see cref="InstallFromStaging"/>, a
/// rename of a verified staging directory, so a model directory is either absent or whole.
/// </summary>
public sealed partial class ModelStore
{
    public const string RecordFile = ".enclave-model.json";
    private const string StagingDirectory = ".staging";

    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public ModelStore(string home)
    {
        Home = home;
        Root = System.IO.Path.Combine(home, "models");
    }

    public string Home { get; }
    public string Root { get; }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex NamePattern();

    public static string ValidateName(string name) =>
        NamePattern().IsMatch(name) ? name : throw new ArgumentException($"model name '{name}' is invalid: use letters, digits, '.', '_' and '-' (no leading dot, at most 128)");

    public string PathOf(string name) => System.IO.Path.Combine(Root, ValidateName(name));

    /// <summary>A fresh (empty) staging directory for an install of <paramref name="name"/>; kept between attempts so downloads resume.</summary>
    public string StagingPath(string name) => System.IO.Path.Combine(Root, StagingDirectory, ValidateName(name));

    public bool Exists(string name) => File.Exists(System.IO.Path.Combine(PathOf(name), RecordFile));

    public IReadOnlyList<ModelRecord> List()
    {
        if (!Directory.Exists(Root))
        {
            return [];
        }

        var result = new List<ModelRecord>();
        foreach (var dir in Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
        {
            var name = System.IO.Path.GetFileName(dir);
            if (name.StartsWith('.') || !File.Exists(System.IO.Path.Combine(dir, RecordFile)))
            {
                continue;
            }

            result.Add(Get(name));
        }

        return result;
    }

    public ModelRecord Get(string name)
    {
        var file = System.IO.Path.Combine(PathOf(name), RecordFile);
        if (!File.Exists(file))
        {
            throw new ArgumentException($"model '{name}' is not installed (see 'enclave models list')");
        }

        try
        {
            return JsonSerializer.Deserialize<ModelRecord>(File.ReadAllText(file), Json) ?? throw new InvalidDataException($"{file}: empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}: not a model record ({e.Message})", e);
        }
    }

    /// <summary>Records the files of a model directory (hashing each) and writes its record file.</summary>
    public static ModelRecord WriteRecord(string directory, ModelRecord template)
    {
        var files = new List<ModelFileRecord>();
        foreach (var file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var rel = System.IO.Path.GetRelativePath(directory, file).Replace('\\', '/');
            if (rel == RecordFile)
            {
                continue;
            }

            files.Add(new ModelFileRecord(rel, new FileInfo(file).Length, Sha256Of(file)));
        }

        var record = template with { Files = files };
        var tmp = System.IO.Path.Combine(directory, RecordFile + ".tmp");
        File.WriteAllText(tmp, JsonSerializer.Serialize(record, Json));
        File.Move(tmp, System.IO.Path.Combine(directory, RecordFile), overwrite: true);
        return record;
    }

    /// <summary>Moves a complete, verified staging directory into place as model <paramref name="name"/>.</summary>
    public string InstallFromStaging(string staging, string name)
    {
        var target = PathOf(name);
        if (Directory.Exists(target))
        {
            throw new ArgumentException($"model '{name}' is already installed at {target}; remove it first with 'enclave models rm {name}'");
        }

        Directory.CreateDirectory(Root);
        Directory.Move(staging, target);
        return target;
    }

    /// <summary>Copies a local model directory (downloaded by other means) into the store, recording every file's hash.</summary>
    public ModelRecord Add(string directory, string? name = null)
    {
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"{directory}: no such directory");
        }

        if (!File.Exists(System.IO.Path.Combine(directory, "config.json")))
        {
            throw new ArgumentException($"{directory}: no config.json, so not a Hugging Face model directory");
        }

        name = ValidateName(name ?? System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(directory))));
        if (Exists(name))
        {
            throw new ArgumentException($"model '{name}' is already installed; remove it first with 'enclave models rm {name}' or pass --name");
        }

        var staging = StagingPath(name) + ".add";
        if (Directory.Exists(staging))
        {
            Directory.Delete(staging, recursive: true);
        }

        try
        {
            foreach (var file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
            {
                var rel = System.IO.Path.GetRelativePath(directory, file);
                if (rel == RecordFile)
                {
                    continue;
                }

                var target = System.IO.Path.Combine(staging, rel);
                Directory.CreateDirectory(System.IO.Path.GetDirectoryName(target)!);
                File.Copy(file, target);
            }

            var record = WriteRecord(staging, new ModelRecord { Name = name, Source = "local:" + System.IO.Path.GetFullPath(directory), InstalledAt = DateTimeOffset.UtcNow, Files = [] });
            InstallFromStaging(staging, name);
            return record;
        }
        catch
        {
            if (Directory.Exists(staging))
            {
                Directory.Delete(staging, recursive: true);
            }

            throw;
        }
    }

    public void Remove(string name)
    {
        var dir = PathOf(name);
        if (!Directory.Exists(dir))
        {
            throw new ArgumentException($"model '{name}' is not installed (see 'enclave models list')");
        }

        // Rename first so a crash mid-delete never leaves a directory that looks like an installed model.
        var doomed = System.IO.Path.Combine(Root, StagingDirectory, name + ".removing-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(doomed)!);
        Directory.Move(dir, doomed);
        Directory.Delete(doomed, recursive: true);
    }

    /// <summary>Re-hashes every recorded file; reports missing, resized, altered and unrecorded files.</summary>
    public IReadOnlyList<VerifyProblem> Verify(string name, IProgress<string>? progress = null)
    {
        var record = Get(name);
        var dir = PathOf(name);
        var problems = new List<VerifyProblem>();
        var recorded = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in record.Files)
        {
            recorded.Add(f.Path);
            var path = System.IO.Path.Combine(dir, f.Path);
            progress?.Report(f.Path);
            if (!File.Exists(path))
            {
                problems.Add(new VerifyProblem(f.Path, "missing"));
                continue;
            }

            var size = new FileInfo(path).Length;
            if (size != f.Size)
            {
                problems.Add(new VerifyProblem(f.Path, $"size {size} bytes, recorded {f.Size}"));
                continue;
            }

            var actual = Sha256Of(path);
            if (!string.Equals(actual, f.Sha256, StringComparison.OrdinalIgnoreCase))
            {
                problems.Add(new VerifyProblem(f.Path, $"SHA-256 {actual} does not match the recorded {f.Sha256}"));
            }
        }

        foreach (var file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
        {
            var rel = System.IO.Path.GetRelativePath(dir, file).Replace('\\', '/');
            if (rel != RecordFile && !recorded.Contains(rel))
            {
                problems.Add(new VerifyProblem(rel, "not part of the recorded model"));
            }
        }

        return problems;
    }

    public static string Sha256Of(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>Rejects relative paths that would escape a directory (absolute, '..', empty segments).</summary>
    public static string SafeRelativePath(string path)
    {
        var p = path.Replace('\\', '/');
        if (p.Length == 0 || p.StartsWith('/') || p.Contains(':') || p.Split('/').Any(s => s is "" or "." or ".."))
        {
            throw new InvalidDataException($"'{path}' is not a safe relative file path");
        }

        return p;
    }
}
