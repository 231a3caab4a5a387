namespace Enclave.Knowledge.Vectors;

/// <summary>Creates and opens persistent vector indexes; the kind and options are recorded in the directory.</summary>
public static class VectorIndex
{
    /// <summary>Creates an empty index in <paramref name="directory"/> (created if needed; refused if it already holds one).</summary>
    public static IVectorIndex Create(string directory, VectorIndexOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        IndexFiles.ValidateOptions(options);
        EnsureLittleEndian();
        return options.Kind == VectorIndexKind.Exact
            ? ExactVectorIndex.Create(directory, options)
            : HnswVectorIndex.Create(directory, options);
    }

    /// <summary>
    /// Opens the index in <paramref name="directory"/> with the options it was created with. Its files are mapped,
    /// not read into memory; a missing, truncated or corrupt file throws <see cref="InvalidDataException"/> naming it.
    /// </summary>
    public static IVectorIndex Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        EnsureLittleEndian();
        var manifest = IndexFiles.ReadManifest(directory);
        return manifest.Options.Kind == VectorIndexKind.Exact
            ? ExactVectorIndex.Open(directory, manifest)
            : HnswVectorIndex.Open(directory, manifest);
    }

    // The files hold native integers and floats; every platform .NET ships on today is little-endian.
    private static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("vector index files are little-endian; this platform is big-endian");
        }
    }
}
