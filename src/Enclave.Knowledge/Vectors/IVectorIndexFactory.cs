namespace Enclave.Knowledge.Vectors;

public interface IVectorIndexFactory
{
    IVectorIndex Create(string directory, VectorIndexOptions options);

    IVectorIndex Open(string directory);
}
