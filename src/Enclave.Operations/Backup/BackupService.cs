using System.Diagnostics;
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Store;
using Enclave.Operations.Registry;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace Enclave.Operations.Backup;

/// <summary>How key material in a backup is sealed: a passphrase (PBKDF2-SHA256) or a key file in the gateway's format.</summary>
public sealed record BackupSecret(string? Passphrase, string? KeyFile)
{
    public void Validate()
    {
        if (string.IsNullOrEmpty(Passphrase) == string.IsNullOrEmpty(KeyFile))
        {
            throw new ArgumentException("give exactly one of --passphrase-file/ENCLAVE_BACKUP_PASSPHRASE or --key-file to protect the key material");
        }
    }
}

public sealed record BackupManifest
{
    public const string CurrentFormat = "enclave-backup/1";

    [JsonPropertyName("format")] public string Format { get; init; } = CurrentFormat;
    [JsonPropertyName("created_at")] public required DateTimeOffset CreatedAt { get; init; }
    [JsonPropertyName("store")] public required string Store { get; init; }
    [JsonPropertyName("files")] public required IReadOnlyList<ModelFileRecord> Files { get; init; }
}

public sealed record BackupSummary(BackupManifest Manifest, long Bytes);

/// <summary>
/// One archive with everything needed to rebuild a site except the models (they have their own signed bundles): the
/// gateway store (SQLite online backup, or <c>pg_dump</c> custom format for PostgreSQL), audit archives, configuration,
/// other data directories (knowledge-base indexes) and the key material, sealed with AES-256-GCM. <c>manifest.json</c>
/// lists the SHA-256 of every entry; restore checks them all before it touches the target.
/// </summary>
public static class BackupService
{
    private const string ManifestEntry = "manifest.json";
    private const string SecretsEntry = "secrets/keys.tar.sealed";
    private const string SqliteEntry = "db/gateway.db";
    private const string PgDumpEntry = "db/gateway.pgdump";
    private const int Pbkdf2Iterations = 600_000;
    private static readonly string[] ConfigExtensions = [".json", ".yaml", ".yml", ".toml", ".conf", ".ini", ".env"];
    private static readonly HashSet<string> OwnDirectories = new(StringComparer.Ordinal) { "models", "keys", "audit" };

    public static async Task<BackupSummary> CreateAsync(string home, string? database, string output, BackupSecret secret, CancellationToken ct = default)
    {
        secret.Validate();
        var store = GatewayStore.Resolve(database, home);
        var work = Directory.CreateTempSubdirectory("enclave-backup-");
        var entries = new List<(string Entry, string File)>();
        try
        {
            if (store.Provider == StoreProvider.Sqlite)
            {
                var copy = Path.Combine(work.FullName, "gateway.db");
                await using (var source = new SqliteConnection(store.ConnectionString))
                await using (var target = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = copy, Pooling = false }.ToString()))
                {
                    await source.OpenAsync(ct);
                    await target.OpenAsync(ct);
                    // The online backup API copies a consistent snapshot while the server keeps writing.
                    source.BackupDatabase(target);
                }

                entries.Add((SqliteEntry, copy));
            }
            else
            {
                var dump = Path.Combine(work.FullName, "gateway.pgdump");
                await RunPgAsync("pg_dump", store.ConnectionString, ["--format=custom", "--no-owner", "--no-privileges", "--file", dump], ct);
                entries.Add((PgDumpEntry, dump));
            }

            var sealedKeys = Path.Combine(work.FullName, "keys.sealed");
            await File.WriteAllBytesAsync(sealedKeys, SealDirectory(Path.Combine(home, "keys"), secret), ct);
            entries.Add((SecretsEntry, sealedKeys));

            foreach (var file in Directory.EnumerateFiles(home))
            {
                var name = Path.GetFileName(file);
                if (ConfigExtensions.Contains(Path.GetExtension(name), StringComparer.OrdinalIgnoreCase))
                {
                    entries.Add(("config/" + name, file));
                }
            }

            foreach (var archive in await AuditArchivesAsync(store, home, ct))
            {
                entries.Add(("audit/" + Path.GetFileName(archive), archive));
            }

            foreach (var dir in Directory.EnumerateDirectories(home))
            {
                var name = Path.GetFileName(dir);
                if (name.StartsWith('.') || OwnDirectories.Contains(name))
                {
                    continue;
                }

                foreach (var file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
                {
                    entries.Add(("data/" + Path.GetRelativePath(home, file).Replace('\\', '/'), file));
                }
            }

            var files = entries.Select(e => new ModelFileRecord(e.Entry, new FileInfo(e.File).Length, ModelStore.Sha256Of(e.File))).ToList();
            var manifest = new BackupManifest { CreatedAt = DateTimeOffset.UtcNow, Store = store.Provider.ToString().ToLowerInvariant(), Files = files };
            var tmp = output + ".tmp";
            await using (var stream = File.Create(tmp))
            await using (var tar = new TarWriter(stream, TarEntryFormat.Pax))
            {
                var manifestEntry = new PaxTarEntry(TarEntryType.RegularFile, ManifestEntry) { DataStream = new MemoryStream(JsonSerializer.SerializeToUtf8Bytes(manifest, ModelStore.Json)) };
                await tar.WriteEntryAsync(manifestEntry, ct);
                foreach (var (entry, file) in entries)
                {
                    await tar.WriteEntryAsync(file, entry, ct);
                }
            }

            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }

            File.Move(tmp, output, overwrite: true);
            return new BackupSummary(manifest, new FileInfo(output).Length);
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>Audit archives to keep: those under HOME/audit and any the store's anchors name.</summary>
    private static async Task<IReadOnlyList<string>> AuditArchivesAsync(GatewayStore store, string home, CancellationToken ct)
    {
        var found = new SortedSet<string>(StringComparer.Ordinal);
        var auditDir = Path.Combine(home, "audit");
        if (Directory.Exists(auditDir))
        {
            foreach (var f in Directory.EnumerateFiles(auditDir))
            {
                found.Add(Path.GetFullPath(f));
            }
        }

        try
        {
            await using var db = store.CreateContext();
            foreach (var file in await db.AuditAnchors.AsNoTracking().Where(a => a.ArchiveFile != null).Select(a => a.ArchiveFile!).ToListAsync(ct))
            {
                if (File.Exists(file))
                {
                    found.Add(Path.GetFullPath(file));
                }
            }
        }
        catch (Exception e) when (e is SqliteException or NpgsqlException or InvalidOperationException)
        {
            // A store without the audit tables has no anchors to follow.
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in found)
        {
            if (!names.Add(Path.GetFileName(f)))
            {
                throw new IOException($"two audit archives are both named {Path.GetFileName(f)}; rename one before backing up");
            }
        }

        return [.. found];
    }

    public static async Task<BackupManifest> RestoreAsync(string archive, string home, string? database, BackupSecret secret, bool force, CancellationToken ct = default)
    {
        secret.Validate();
        if (!File.Exists(archive))
        {
            throw new FileNotFoundException($"{archive}: no such backup file");
        }

        var target = GatewayStore.Resolve(database, home);
        if (!force)
        {
            if (target.Provider == StoreProvider.Sqlite && File.Exists(Path.Combine(home, "gateway.db")) && string.IsNullOrEmpty(database))
            {
                throw new ArgumentException($"{home} already has a gateway store; restore onto a fresh directory (--home) or pass --force to replace it");
            }

            if (Directory.Exists(Path.Combine(home, "keys")) && Directory.EnumerateFileSystemEntries(Path.Combine(home, "keys")).Any())
            {
                throw new ArgumentException($"{home}/keys already holds key material; restore onto a fresh directory (--home) or pass --force to replace it");
            }
        }

        Directory.CreateDirectory(home);
        var staging = Path.Combine(home, ".restore-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(staging);
        try
        {
            var manifest = ExtractVerified(archive, staging);
            if (manifest.Store == "sqlite" && target.Provider != StoreProvider.Sqlite || manifest.Store == "postgres" && target.Provider != StoreProvider.Postgres)
            {
                throw new ArgumentException($"the backup holds a {manifest.Store} store; pass --database for a {manifest.Store} target");
            }

            // Unseal before anything is written to the target: a wrong passphrase must leave it untouched.
            var keysTar = Unseal(await File.ReadAllBytesAsync(Path.Combine(staging, SecretsEntry), ct), secret);

            if (target.Provider == StoreProvider.Sqlite)
            {
                var dbFile = new SqliteConnectionStringBuilder(target.ConnectionString).DataSource;
                foreach (var suffix in new[] { "-wal", "-shm" })
                {
                    File.Delete(dbFile + suffix);
                }

                File.Copy(Path.Combine(staging, SqliteEntry), dbFile, overwrite: true);
            }
            else
            {
                await RunPgAsync("pg_restore", target.ConnectionString, ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction", Path.Combine(staging, PgDumpEntry)], ct);
            }

            var keysDir = Path.Combine(home, "keys");
            Directory.CreateDirectory(keysDir);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(keysDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            using (var tar = new TarReader(new MemoryStream(keysTar)))
            {
                TarEntry? entry;
                while ((entry = tar.GetNextEntry()) is not null)
                {
                    var path = Path.Combine(keysDir, ModelStore.SafeRelativePath(entry.Name));
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    entry.ExtractToFile(path, overwrite: true);
                    if (!OperatingSystem.IsWindows())
                    {
                        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                    }
                }
            }

            void Place(string prefix, string destination)
            {
                var from = Path.Combine(staging, prefix);
                if (!Directory.Exists(from))
                {
                    return;
                }

                foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
                {
                    var to = Path.Combine(destination, Path.GetRelativePath(from, file));
                    Directory.CreateDirectory(Path.GetDirectoryName(to)!);
                    File.Move(file, to, overwrite: true);
                }
            }

            Place("config", home);
            Place("audit", Path.Combine(home, "audit"));
            Place("data", home);

            // Bring an older backup's schema up to date, and point archived-chain anchors at the restored archives.
            await target.MigrateAsync(ct);
            await using (var db = target.CreateContext())
            {
                foreach (var anchor in await db.AuditAnchors.Where(a => a.ArchiveFile != null).ToListAsync(ct))
                {
                    var restored = Path.Combine(home, "audit", Path.GetFileName(anchor.ArchiveFile!));
                    if (File.Exists(restored))
                    {
                        anchor.ArchiveFile = Path.GetFullPath(restored);
                    }
                }

                await db.SaveChangesAsync(ct);
            }

            return manifest;
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>Extracts every entry into <paramref name="staging"/> and checks it against the manifest; throws on any difference.</summary>
    private static BackupManifest ExtractVerified(string archive, string staging)
    {
        using var stream = File.OpenRead(archive);
        using var tar = new TarReader(stream);
        var first = tar.GetNextEntry();
        if (first is null || first.Name != ManifestEntry || first.DataStream is null)
        {
            throw new InvalidDataException($"{archive}: not an enclave backup (no manifest.json first)");
        }

        BackupManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<BackupManifest>(first.DataStream, ModelStore.Json) ?? throw new InvalidDataException($"{archive}: empty manifest");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{archive}: manifest is not valid JSON ({e.Message})", e);
        }

        if (manifest.Format != BackupManifest.CurrentFormat)
        {
            throw new InvalidDataException($"{archive}: unknown backup format '{manifest.Format}'");
        }

        var expected = manifest.Files.ToDictionary(f => ModelStore.SafeRelativePath(f.Path), StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        TarEntry? entry;
        while ((entry = tar.GetNextEntry()) is not null)
        {
            var rel = ModelStore.SafeRelativePath(entry.Name);
            if (!expected.TryGetValue(rel, out var want) || !seen.Add(rel))
            {
                throw new InvalidDataException($"{archive}: entry '{rel}' is not in the manifest (altered backup); nothing was restored");
            }

            var path = Path.Combine(staging, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            entry.ExtractToFile(path, overwrite: false);
            var actual = ModelStore.Sha256Of(path);
            if (!string.Equals(actual, want.Sha256, StringComparison.OrdinalIgnoreCase) || new FileInfo(path).Length != want.Size)
            {
                throw new InvalidDataException($"{archive}: entry '{rel}' does not match its manifest hash (altered or damaged backup); nothing was restored");
            }
        }

        var missing = expected.Keys.FirstOrDefault(k => !seen.Contains(k));
        if (missing is not null)
        {
            throw new InvalidDataException($"{archive}: entry '{missing}' listed in the manifest is missing (truncated backup); nothing was restored");
        }

        return manifest;
    }

    private sealed record SealedSecrets(
        [property: JsonPropertyName("kdf")] string Kdf,
        [property: JsonPropertyName("iterations")] int Iterations,
        [property: JsonPropertyName("salt")] string? Salt,
        [property: JsonPropertyName("key_id")] string? KeyId,
        [property: JsonPropertyName("sealed")] string Sealed);

    private static readonly byte[] SecretsAad = Encoding.ASCII.GetBytes("enclave:backup-keys:v1");

    internal static byte[] SealDirectory(string directory, BackupSecret secret)
    {
        using var buffer = new MemoryStream();
        using (var tar = new TarWriter(buffer, TarEntryFormat.Pax, leaveOpen: true))
        {
            if (Directory.Exists(directory))
            {
                foreach (var file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
                {
                    tar.WriteEntry(file, Path.GetRelativePath(directory, file).Replace('\\', '/'));
                }
            }
        }

        var plain = buffer.ToArray();
        try
        {
            SealedSecrets header;
            byte[] key;
            if (secret.Passphrase is { Length: > 0 } passphrase)
            {
                var salt = RandomNumberGenerator.GetBytes(16);
                key = Rfc2898DeriveBytes.Pbkdf2(passphrase, salt, Pbkdf2Iterations, HashAlgorithmName.SHA256, 32);
                header = new SealedSecrets("pbkdf2-sha256", Pbkdf2Iterations, Convert.ToBase64String(salt), null, "");
            }
            else
            {
                var provider = new FileKeyProvider(secret.KeyFile!);
                key = provider.GetKey(provider.CurrentKeyId);
                header = new SealedSecrets("key-file", 0, null, provider.CurrentKeyId, "");
            }

            var sealedBytes = Aead.Seal(Aead.Aes256Gcm, Key32(key), plain, SecretsAad);
            return JsonSerializer.SerializeToUtf8Bytes(header with { Sealed = Convert.ToBase64String(sealedBytes) });
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plain);
        }
    }

    internal static byte[] Unseal(byte[] sealedFile, BackupSecret secret)
    {
        var header = JsonSerializer.Deserialize<SealedSecrets>(sealedFile) ?? throw new InvalidDataException("sealed key material is empty");
        byte[] key;
        if (header.Kdf == "pbkdf2-sha256")
        {
            if (string.IsNullOrEmpty(secret.Passphrase))
            {
                throw new ArgumentException("this backup's key material is sealed with a passphrase; give --passphrase-file or ENCLAVE_BACKUP_PASSPHRASE");
            }

            key = Rfc2898DeriveBytes.Pbkdf2(secret.Passphrase, Convert.FromBase64String(header.Salt!), header.Iterations, HashAlgorithmName.SHA256, 32);
        }
        else
        {
            if (string.IsNullOrEmpty(secret.KeyFile))
            {
                throw new ArgumentException($"this backup's key material is sealed with key '{header.KeyId}' from a key file; give --key-file");
            }

            key = new FileKeyProvider(secret.KeyFile).GetKey(header.KeyId!);
        }

        try
        {
            return Aead.Open(Aead.Aes256Gcm, Key32(key), Convert.FromBase64String(header.Sealed), SecretsAad);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException("cannot unseal the key material: wrong passphrase or key file (or the backup was altered); nothing was restored", e);
        }
    }

    private static byte[] Key32(byte[] key) => key.Length == 32 ? key : HKDF.DeriveKey(HashAlgorithmName.SHA256, key, 32, info: Encoding.ASCII.GetBytes("enclave-backup-keys"));

    /// <summary>Runs pg_dump/pg_restore with the connection taken from the Npgsql connection string (password through PGPASSWORD, never argv).</summary>
    private static async Task RunPgAsync(string tool, string connectionString, IReadOnlyList<string> args, CancellationToken ct)
    {
        var cs = new NpgsqlConnectionStringBuilder(connectionString);
        var psi = new ProcessStartInfo(FindPgTool(tool)) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.ArgumentList.Add("--dbname");
        psi.ArgumentList.Add(cs.Database ?? "postgres");
        psi.Environment["PGHOST"] = cs.Host ?? "127.0.0.1";
        psi.Environment["PGPORT"] = cs.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        psi.Environment["PGUSER"] = cs.Username ?? "";
        psi.Environment["PGPASSWORD"] = cs.Password ?? "";
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new IOException($"{tool} did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new IOException($"{tool} is not installed (Debian: apt-get install postgresql-client): {e.Message}", e);
        }

        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync(ct);
            await process.StandardOutput.ReadToEndAsync(ct);
            await process.WaitForExitAsync(ct);
            if (process.ExitCode != 0)
            {
                throw new IOException($"{tool} failed with exit code {process.ExitCode}: {(await stderr).Trim()}");
            }
        }
    }

    /// <summary>The newest PostgreSQL client of /usr/lib/postgresql (matches the server installed beside it), else PATH.</summary>
    private static string FindPgTool(string tool)
    {
        const string root = "/usr/lib/postgresql";
        if (Directory.Exists(root))
        {
            var best = Directory.GetDirectories(root)
                .Select(d => (Dir: d, Version: int.TryParse(Path.GetFileName(d), out var v) ? v : 0))
                .OrderByDescending(x => x.Version)
                .Select(x => Path.Combine(x.Dir, "bin", tool))
                .FirstOrDefault(File.Exists);
            if (best is not null)
            {
                return best;
            }
        }

        return tool;
    }
}
