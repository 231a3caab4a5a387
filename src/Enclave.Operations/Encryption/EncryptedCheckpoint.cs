using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Enclave.Engine.Formats;
using Enclave.Gateway.Crypto;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Modes;
using Org.BouncyCastle.Crypto.Parameters;

namespace Enclave.Operations.Encryption;

public sealed record EncryptedFile(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("encrypted_name")] string EncryptedName,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("chunks")] long Chunks);

/// <summary>The plaintext description of an encrypted checkpoint (<c>encryption.json</c>); holds no secret.</summary>
public sealed record EncryptionHeader
{
    public const string CurrentFormat = "enclave-encrypted-weights/1";

    [JsonPropertyName("format")] public string Format { get; init; } = CurrentFormat;
    [JsonPropertyName("algorithm")] public required string Algorithm { get; init; }
    [JsonPropertyName("key_id")] public required string KeyId { get; init; }
    /// <summary>The random data key, sealed under the key-encryption key (nonce || ciphertext || tag, base64).</summary>
    [JsonPropertyName("wrapped_key")] public required string WrappedKey { get; init; }
    [JsonPropertyName("chunk_size")] public required int ChunkSize { get; init; }
    [JsonPropertyName("files")] public required IReadOnlyList<EncryptedFile> Files { get; init; }
}

/// <summary>
/// Safetensors files encrypted at rest in independent chunks: each chunk is <c>nonce(12) || ciphertext || tag(16)</c>
/// under a per-model data key with AES-256-GCM or SM4-GCM, and its associated data binds the file name, chunk index,
/// chunk count and plaintext size, so chunks cannot be swapped, reordered or dropped. The data key is wrapped by a key
/// from an <see cref="IKeyProvider"/> (the gateway's key files), exactly as the gateway wraps its secrets' data keys.
/// </summary>
public static class EncryptedCheckpoint
{
    public const string HeaderFile = "encryption.json";
    public const string Extension = ".enc";
    public const int DefaultChunkSize = 4 << 20;
    private static readonly byte[] DekAad = Encoding.ASCII.GetBytes("enclave:weights-dek:v1");

    public static string DefaultKeyFile(string home) => Path.Combine(home, "keys", "models.key");

    public static bool IsEncrypted(string directory) => File.Exists(Path.Combine(directory, HeaderFile));

    /// <summary>The key provider for model weights: the given key file, else ENCLAVE_HOME/keys/models.key (created on first encryption).</summary>
    public static FileKeyProvider KeyProvider(string? keyFile, string home, bool create)
    {
        var path = keyFile ?? DefaultKeyFile(home);
        if (!File.Exists(path))
        {
            if (keyFile is not null)
            {
                throw new FileNotFoundException($"weights key file {path} not found");
            }

            if (!create)
            {
                throw new FileNotFoundException($"weights key file {path} not found: copy the key file 'enclave models encrypt' used to this path, or set ENCLAVE_WEIGHTS_KEY_FILE");
            }

            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            FileKeyProvider.AddKey(path);
        }

        return new FileKeyProvider(path);
    }

    /// <summary>
    /// Encrypts every <c>*.safetensors</c> file of <paramref name="directory"/> into <c>NAME.safetensors.enc</c>, writes
    /// <c>encryption.json</c>, then deletes the plaintext files. Nothing is deleted unless every file was written.
    /// </summary>
    public static EncryptionHeader Encrypt(string directory, IKeyProvider keys, string algorithm = Aead.Aes256Gcm, int chunkSize = DefaultChunkSize)
    {
        Aead.KeySize(algorithm);
        if (IsEncrypted(directory))
        {
            throw new ArgumentException($"{directory}: the weights are already encrypted");
        }

        var plaintext = Directory.GetFiles(directory, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        if (plaintext.Length == 0)
        {
            throw new ArgumentException($"{directory}: no *.safetensors files to encrypt");
        }

        var dek = RandomNumberGenerator.GetBytes(Aead.KeySize(algorithm));
        var keyId = keys.CurrentKeyId;
        var wrapped = Aead.Seal(algorithm, Kek(keys, keyId, algorithm), dek, DekAad);
        var files = new List<EncryptedFile>();
        var written = new List<string>();
        try
        {
            foreach (var path in plaintext)
            {
                var name = Path.GetFileName(path);
                var size = new FileInfo(path).Length;
                var chunks = Math.Max(1, (size + chunkSize - 1) / chunkSize);
                var target = path + Extension;
                written.Add(target);
                EncryptFile(path, target, name, size, chunks, chunkSize, algorithm, dek);
                files.Add(new EncryptedFile(name, name + Extension, size, chunks));
            }

            var header = new EncryptionHeader
            {
                Algorithm = algorithm,
                KeyId = keyId,
                WrappedKey = Convert.ToBase64String(wrapped),
                ChunkSize = chunkSize,
                Files = files,
            };
            var headerPath = Path.Combine(directory, HeaderFile);
            File.WriteAllText(headerPath + ".tmp", JsonSerializer.Serialize(header, new JsonSerializerOptions { WriteIndented = true }));
            File.Move(headerPath + ".tmp", headerPath);
            foreach (var path in plaintext)
            {
                File.Delete(path);
            }

            return header;
        }
        catch
        {
            foreach (var w in written)
            {
                File.Delete(w);
            }

            throw;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dek);
        }
    }

    public static EncryptionHeader ReadHeader(string directory)
    {
        var path = Path.Combine(directory, HeaderFile);
        try
        {
            var header = JsonSerializer.Deserialize<EncryptionHeader>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty");
            if (header.Format != EncryptionHeader.CurrentFormat || header.ChunkSize <= 0)
            {
                throw new InvalidDataException($"{path}: unknown encrypted-weights format '{header.Format}'");
            }

            Aead.KeySize(header.Algorithm);
            return header;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    internal static byte[] UnwrapKey(EncryptionHeader header, IKeyProvider keys, string directory)
    {
        try
        {
            return Aead.Open(header.Algorithm, Kek(keys, header.KeyId, header.Algorithm), Convert.FromBase64String(header.WrappedKey), DekAad);
        }
        catch (CryptographicException e)
        {
            throw new CheckpointFormatException($"{directory}: cannot unwrap the weights key with key '{header.KeyId}' ({e.Message}): wrong key file?", e);
        }
    }

    /// <summary>A 256-bit master key serves SM4 (128-bit) through the same labelled derivation the gateway uses.</summary>
    private static byte[] Kek(IKeyProvider keys, string id, string algorithm)
    {
        var k = keys.GetKey(id);
        var size = Aead.KeySize(algorithm);
        return k.Length == size ? k : HKDF.DeriveKey(HashAlgorithmName.SHA256, k, size, info: Encoding.ASCII.GetBytes("enclave-kek-" + algorithm));
    }

    internal static byte[] ChunkAad(string name, long index, long chunks, long size)
    {
        var nameBytes = Encoding.UTF8.GetBytes("enclave:weights:v1:" + name);
        var aad = new byte[nameBytes.Length + 24];
        nameBytes.CopyTo(aad, 0);
        BinaryPrimitives.WriteInt64LittleEndian(aad.AsSpan(nameBytes.Length), index);
        BinaryPrimitives.WriteInt64LittleEndian(aad.AsSpan(nameBytes.Length + 8), chunks);
        BinaryPrimitives.WriteInt64LittleEndian(aad.AsSpan(nameBytes.Length + 16), size);
        return aad;
    }

    private static int RecordSize(int chunkSize) => Aead.NonceSize + chunkSize + Aead.TagSize;

    /// <summary>Chunks are independent, so they are sealed in parallel with positional reads and writes.</summary>
    private static void EncryptFile(string path, string target, string name, long size, long chunks, int chunkSize, string algorithm, byte[] dek)
    {
        using var input = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        using var output = File.OpenHandle(target, FileMode.Create, FileAccess.Write, FileShare.None, preallocationSize: size + chunks * (Aead.NonceSize + Aead.TagSize));
        Parallel.For(0L, chunks, () => new byte[chunkSize], (c, _, plain) =>
        {
            var length = (int)Math.Min(chunkSize, size - c * chunkSize);
            var read = 0;
            while (read < length)
            {
                var n = RandomAccess.Read(input, plain.AsSpan(read, length - read), c * chunkSize + read);
                read += n > 0 ? n : throw new IOException($"{path}: changed size while it was being encrypted");
            }

            RandomAccess.Write(output, Aead.Seal(algorithm, dek, plain[..length], ChunkAad(name, c, chunks, size)), c * RecordSize(chunkSize));
            return plain;
        }, plain => CryptographicOperations.ZeroMemory(plain));
    }

    /// <summary>
    /// Decrypts one encrypted file into <paramref name="destination"/> (native memory of the plaintext size), chunks in
    /// parallel across the cores. AES-GCM decrypts straight into it; SM4-GCM goes through a per-thread buffer that is
    /// wiped after each chunk.
    /// </summary>
    internal static unsafe void DecryptInto(string path, EncryptedFile file, EncryptionHeader header, byte[] dek, byte* destination)
    {
        using var input = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var expectedLength = file.Size + file.Chunks * (Aead.NonceSize + Aead.TagSize);
        var actualLength = RandomAccess.GetLength(input);
        if (actualLength != expectedLength)
        {
            throw new CheckpointFormatException($"{path}: {actualLength} bytes, expected {expectedLength} for {file.Chunks} encrypted chunks (truncated or altered)");
        }

        var chunkSize = header.ChunkSize;
        var aes = header.Algorithm == Aead.Aes256Gcm;
        var address = (nint)destination;
        var gate = new object();
        var firstBad = long.MaxValue;
        Exception? failure = null;
        Parallel.For(0L, file.Chunks,
            () => new DecryptState(RecordSize(chunkSize), aes ? new AesGcm(dek, Aead.TagSize) : null),
            (c, loop, state) =>
            {
                var length = (int)Math.Min(chunkSize, file.Size - c * chunkSize);
                var recordLength = Aead.NonceSize + length + Aead.TagSize;
                try
                {
                    var read = 0;
                    while (read < recordLength)
                    {
                        var n = RandomAccess.Read(input, state.Record.AsSpan(read, recordLength - read), c * RecordSize(chunkSize) + read);
                        read += n > 0 ? n : throw new IOException($"{path}: ended early");
                    }

                    var aad = ChunkAad(file.Name, c, file.Chunks, file.Size);
                    var target = new Span<byte>((byte*)address + c * chunkSize, length);
                    var record = state.Record;
                    if (state.Aes is { } gcm)
                    {
                        gcm.Decrypt(record.AsSpan(0, Aead.NonceSize), record.AsSpan(Aead.NonceSize, length), record.AsSpan(Aead.NonceSize + length, Aead.TagSize), target, aad);
                    }
                    else
                    {
                        var cipher = new GcmBlockCipher(new SM4Engine());
                        cipher.Init(false, new AeadParameters(new KeyParameter(dek), Aead.TagSize * 8, record[..Aead.NonceSize], aad));
                        var n = cipher.ProcessBytes(record, Aead.NonceSize, length + Aead.TagSize, state.Plain, 0);
                        n += cipher.DoFinal(state.Plain, n);
                        state.Plain.AsSpan(0, n).CopyTo(target);
                        CryptographicOperations.ZeroMemory(state.Plain.AsSpan(0, n));
                    }
                }
                catch (Exception e) when (e is CryptographicException or InvalidCipherTextException or IOException)
                {
                    // Report the first bad chunk in file order, whatever order the threads met them in.
                    lock (gate)
                    {
                        if (c < firstBad)
                        {
                            firstBad = c;
                            failure = e;
                        }
                    }

                    loop.Stop();
                }

                return state;
            },
            state => state.Dispose());

        if (failure is not null)
        {
            throw new CheckpointFormatException($"{path}: chunk {firstBad} of {file.Chunks} fails authentication (altered file or wrong key)", failure);
        }
    }

    private sealed class DecryptState(int recordSize, AesGcm? aes) : IDisposable
    {
        public byte[] Record { get; } = new byte[recordSize];
        public byte[] Plain { get; } = aes is null ? new byte[recordSize] : [];
        public AesGcm? Aes { get; } = aes;

        public void Dispose()
        {
            CryptographicOperations.ZeroMemory(Plain);
            Aes?.Dispose();
        }
    }
}

/// <summary>
/// An <see cref="IWeightSource"/> over an encrypted checkpoint: each file is decrypted into unmanaged memory and
/// parsed in place (the engine's safetensors validation), so no plaintext ever reaches the disk. The memory is wiped
/// and freed on dispose.
/// </summary>
public sealed unsafe class EncryptedWeightSource : IWeightSource
{
    private readonly List<(nint Pointer, long Size)> buffers = [];
    private readonly List<SafetensorsFile> files = [];
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);

    private EncryptedWeightSource(string directory) => Description = directory;

    public string Description { get; }

    public IEnumerable<string> TensorNames => tensors.Keys;

    public static EncryptedWeightSource Open(string directory, IKeyProvider keys)
    {
        var header = EncryptedCheckpoint.ReadHeader(directory);
        var dek = EncryptedCheckpoint.UnwrapKey(header, keys, directory);
        var source = new EncryptedWeightSource(directory);
        try
        {
            foreach (var file in header.Files)
            {
                var path = Path.Combine(directory, Registry.ModelStore.SafeRelativePath(file.EncryptedName));
                var memory = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(file.Size, 64), 64);
                source.buffers.Add(((nint)memory, file.Size));
                EncryptedCheckpoint.DecryptInto(path, file, header, dek, memory);
                var parsed = new SafetensorsFile(Path.Combine(directory, file.Name), memory, file.Size);
                source.files.Add(parsed);
                foreach (var (name, tensor) in parsed.Tensors)
                {
                    if (!source.tensors.TryAdd(name, tensor))
                    {
                        throw new CheckpointFormatException($"{path}: tensor '{name}' is also stored in {source.tensors[name].File}");
                    }
                }
            }

            return source;
        }
        catch
        {
            source.Dispose();
            throw;
        }
        finally
        {
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(dek);
        }
    }

    public bool Contains(string name) => tensors.ContainsKey(name);

    public CheckpointTensor Get(string name) =>
        tensors.TryGetValue(name, out var t) ? t : throw new CheckpointFormatException($"{Description}: tensor '{name}' is missing from the checkpoint");

    public void Dispose()
    {
        foreach (var f in files)
        {
            f.Dispose();
        }

        files.Clear();
        tensors.Clear();
        foreach (var (pointer, size) in buffers)
        {
            // Wipe the plaintext before the allocator can hand the pages to anyone else.
            for (long offset = 0; offset < size; offset += int.MaxValue)
            {
                new Span<byte>((byte*)pointer + offset, (int)Math.Min(int.MaxValue, size - offset)).Clear();
            }

            NativeMemory.AlignedFree((void*)pointer);
        }

        buffers.Clear();
    }
}
