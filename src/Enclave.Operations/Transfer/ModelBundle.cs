using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Enclave.Gateway.Audit;
using Enclave.Operations.Registry;

namespace Enclave.Operations.Transfer;

public sealed record BundleManifest
{
    public const string CurrentFormat = "enclave-model-bundle/1";

    [JsonPropertyName("format")] public string Format { get; init; } = CurrentFormat;
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("created_at")] public required DateTimeOffset CreatedAt { get; init; }
    [JsonPropertyName("public_key")] public required string PublicKey { get; init; }
    [JsonPropertyName("repo")] public string? Repo { get; init; }
    [JsonPropertyName("commit")] public string? Commit { get; init; }
    [JsonPropertyName("encryption")] public string? Encryption { get; init; }
    [JsonPropertyName("files")] public required IReadOnlyList<ModelFileRecord> Files { get; init; }
}

public sealed record ImportResult(ModelRecord Record, string SignerPublicKey, bool KeyPinned);

/// <summary>
/// Offline transfer of an installed model as one tar file: <c>manifest.json</c> (SHA-256 and size of every file),
/// <c>manifest.sig</c> (Ed25519 over the manifest's exact bytes, by the site key under ENCLAVE_HOME/keys), then the
/// files under <c>files/</c>. Import checks the signature before it writes anything and every file's hash as it
/// extracts; the model is installed only when all of them match.
/// </summary>
public static class ModelBundle
{
    private const string ManifestEntry = "manifest.json";
    private const string SignatureEntry = "manifest.sig";
    private const string FilesPrefix = "files/";

    public static string SigningKeyPath(string home) => Path.Combine(home, "keys", "models-ed25519.key");

    /// <summary>The site's bundle signing key, created on first use (mode 0600), and its public half.</summary>
    public static AuditSigner SigningKey(string home) => AuditSigner.LoadOrCreate(SigningKeyPath(home));

    public static BundleManifest Export(ModelStore store, string name, string output)
    {
        var problems = store.Verify(name);
        if (problems.Count > 0)
        {
            throw new ModelIntegrityException($"model '{name}' does not verify, so it is not exported: {problems[0].Path}: {problems[0].Message}");
        }

        var record = store.Get(name);
        var signer = SigningKey(store.Home);
        var manifest = new BundleManifest
        {
            Name = record.Name,
            CreatedAt = DateTimeOffset.UtcNow,
            PublicKey = signer.PublicKey,
            Repo = record.Repo,
            Commit = record.Commit,
            Encryption = record.Encryption,
            Files = record.Files,
        };
        var manifestBytes = JsonSerializer.SerializeToUtf8Bytes(manifest, ModelStore.Json);
        var signature = System.Text.Encoding.ASCII.GetBytes(signer.Sign(manifestBytes) + "\n");

        var tmp = output + ".tmp";
        try
        {
            using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            using (var tar = new TarWriter(stream, TarEntryFormat.Pax, leaveOpen: false))
            {
                WriteBytes(tar, ManifestEntry, manifestBytes);
                WriteBytes(tar, SignatureEntry, signature);
                var dir = store.PathOf(name);
                foreach (var f in record.Files)
                {
                    tar.WriteEntry(Path.Combine(dir, f.Path), FilesPrefix + f.Path);
                }
            }

            File.Move(tmp, output, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }

        return manifest;
    }

    private static void WriteBytes(TarWriter tar, string name, byte[] bytes)
    {
        var entry = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(bytes), Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead };
        tar.WriteEntry(entry);
    }

    /// <summary>
    /// Imports a bundle. With <paramref name="trustedPublicKey"/> the manifest must be signed by that key; without it the
    /// signature is checked against the key the bundle carries (integrity, not origin: <see cref="ImportResult.KeyPinned"/> is false).
    /// </summary>
    public static ImportResult Import(ModelStore store, string bundle, string? trustedPublicKey, string? nameOverride = null)
    {
        if (!File.Exists(bundle))
        {
            throw new FileNotFoundException($"{bundle}: no such bundle file");
        }

        using var stream = File.OpenRead(bundle);
        using var tar = new TarReader(stream);
        var manifestBytes = ReadSmall(tar.GetNextEntry(), ManifestEntry, bundle);
        var signature = System.Text.Encoding.ASCII.GetString(ReadSmall(tar.GetNextEntry(), SignatureEntry, bundle)).Trim();
        BundleManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<BundleManifest>(manifestBytes, ModelStore.Json) ?? throw new InvalidDataException("empty manifest");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{bundle}: the manifest is not valid JSON ({e.Message})", e);
        }

        if (manifest.Format != BundleManifest.CurrentFormat)
        {
            throw new InvalidDataException($"{bundle}: unknown bundle format '{manifest.Format}'");
        }

        var key = trustedPublicKey?.Trim() ?? manifest.PublicKey;
        if (!AuditSigner.Verify(key, manifestBytes, signature))
        {
            throw new ModelIntegrityException(trustedPublicKey is not null
                ? $"{bundle}: the manifest is not signed by the trusted key (tampered, or signed by another site); nothing was imported"
                : $"{bundle}: the manifest signature does not verify (tampered bundle); nothing was imported");
        }

        var name = ModelStore.ValidateName(nameOverride ?? manifest.Name);
        if (store.Exists(name))
        {
            throw new ArgumentException($"model '{name}' is already installed; remove it first or import with --name");
        }

        var expected = new Dictionary<string, ModelFileRecord>(StringComparer.Ordinal);
        foreach (var f in manifest.Files)
        {
            expected[ModelStore.SafeRelativePath(f.Path)] = f;
        }

        var staging = store.StagingPath(name) + ".import";
        if (Directory.Exists(staging))
        {
            Directory.Delete(staging, recursive: true);
        }

        Directory.CreateDirectory(staging);
        try
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            TarEntry? entry;
            var buffer = new byte[1 << 20];
            while ((entry = tar.GetNextEntry()) is not null)
            {
                if (entry.EntryType is TarEntryType.Directory)
                {
                    continue;
                }

                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || !entry.Name.StartsWith(FilesPrefix, StringComparison.Ordinal))
                {
                    throw new ModelIntegrityException($"{bundle}: unexpected entry '{entry.Name}' (tampered bundle); nothing was imported");
                }

                var rel = ModelStore.SafeRelativePath(entry.Name[FilesPrefix.Length..]);
                if (!expected.TryGetValue(rel, out var want) || !seen.Add(rel))
                {
                    throw new ModelIntegrityException($"{bundle}: file '{rel}' is not in the signed manifest (tampered bundle); nothing was imported");
                }

                var target = Path.Combine(staging, rel);
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                long size = 0;
                using (var output = new FileStream(target, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                {
                    var data = entry.DataStream ?? Stream.Null;
                    int read;
                    while ((read = data.Read(buffer)) > 0)
                    {
                        sha.AppendData(buffer, 0, read);
                        output.Write(buffer, 0, read);
                        size += read;
                    }
                }

                var actual = Convert.ToHexStringLower(sha.GetHashAndReset());
                if (size != want.Size || !string.Equals(actual, want.Sha256, StringComparison.OrdinalIgnoreCase))
                {
                    throw new ModelIntegrityException($"{bundle}: file '{rel}' does not match the signed manifest (SHA-256 {actual}, {size} bytes; expected {want.Sha256}, {want.Size} bytes); nothing was imported");
                }
            }

            var missing = expected.Keys.Where(k => !seen.Contains(k)).ToList();
            if (missing.Count > 0)
            {
                throw new ModelIntegrityException($"{bundle}: '{missing[0]}' (and {missing.Count - 1} more) listed in the manifest is missing from the bundle; nothing was imported");
            }

            var record = ModelStore.WriteRecord(staging, new ModelRecord
            {
                Name = name,
                Source = "bundle:" + Path.GetFileName(bundle),
                Repo = manifest.Repo,
                Commit = manifest.Commit,
                Encryption = manifest.Encryption,
                InstalledAt = DateTimeOffset.UtcNow,
                Files = [],
            });
            store.InstallFromStaging(staging, name);
            return new ImportResult(record, manifest.PublicKey, trustedPublicKey is not null);
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

    private static byte[] ReadSmall(TarEntry? entry, string expectedName, string bundle)
    {
        if (entry is null || entry.Name != expectedName || entry.DataStream is null || entry.Length > 64 << 20)
        {
            throw new InvalidDataException($"{bundle}: not an enclave model bundle (expected '{expectedName}' at this position)");
        }

        using var ms = new MemoryStream();
        entry.DataStream.CopyTo(ms);
        return ms.ToArray();
    }

    /// <summary>Reads a public key file (the base64 line 'enclave models key' prints), ignoring comment lines.</summary>
    public static string ReadPublicKey(string file)
    {
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"--trusted-key {file}: no such file");
        }

        var line = File.ReadAllLines(file).Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0 && !l.StartsWith('#'));
        if (line is null || !IsKey(line))
        {
            throw new InvalidDataException($"--trusted-key {file}: expected one base64 Ed25519 public key (32 bytes)");
        }

        return line;
    }

    private static bool IsKey(string text)
    {
        var bytes = new byte[64];
        return Convert.TryFromBase64String(text, bytes, out var n) && n == 32;
    }
}
