namespace Enclave.Knowledge.Vectors;

/// <summary>The embedded, memory-mapped vector indexes (<see cref="VectorIndex"/>) behind the knowledge base's seam.</summary>
public sealed class VectorIndexFactory : IVectorIndexFactory
{
    public IVectorIndex Create(string directory, VectorIndexOptions options) => VectorIndex.Create(directory, options);

    public IVectorIndex Open(string directory) => VectorIndex.Open(directory);
}
