using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Retrieval;
using Microsoft.Extensions.AI;

namespace Enclave.Knowledge.Tests.Support;

/// <summary>
/// A test double for the embedding seam, NOT a language model: it hashes words and CJK characters into a fixed-width
/// count vector and L2-normalises it. It only exists to exercise the dense and hybrid plumbing (vectors written at
/// ingestion, removed with their chunks, searched and fused); it says nothing about dense retrieval quality.
/// </summary>
public sealed class HashedBagOfWordsEmbedder(int dimensions = 64) : IEmbeddingGenerator<string, Embedding<float>>, IEmbeddingModelProvider
{
    public int Calls { get; private set; }

    public IEmbeddingGenerator<string, Embedding<float>>? Get(string modelDirectory) => this;

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        Calls++;
        var result = new GeneratedEmbeddings<Embedding<float>>();
        foreach (var text in values)
        {
            result.Add(new Embedding<float>(Vector(text)));
        }

        return Task.FromResult(result);
    }

    private float[] Vector(string text)
    {
        var v = new float[dimensions];
        foreach (var token in Tokens(text.ToLowerInvariant()))
        {
            v[(int)((uint)StableHash(token) % (uint)dimensions)] += 1;
        }

        var norm = MathF.Sqrt(v.Sum(x => x * x));
        if (norm > 0)
        {
            for (var i = 0; i < v.Length; i++)
            {
                v[i] /= norm;
            }
        }

        return v;
    }

    private static IEnumerable<string> Tokens(string text)
    {
        var word = new System.Text.StringBuilder();
        foreach (var c in text)
        {
            if (Cjk.IsCjk(c))
            {
                if (word.Length > 0)
                {
                    yield return word.ToString();
                    word.Clear();
                }

                yield return c.ToString();
            }
            else if (char.IsLetterOrDigit(c))
            {
                word.Append(c);
            }
            else if (word.Length > 0)
            {
                yield return word.ToString();
                word.Clear();
            }
        }

        if (word.Length > 0)
        {
            yield return word.ToString();
        }
    }

    private static int StableHash(string s)
    {
        unchecked
        {
            var h = (int)2166136261;
            foreach (var c in s)
            {
                h = (h ^ c) * 16777619;
            }

            return h;
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => null;

    public void Dispose()
    {
    }
}
