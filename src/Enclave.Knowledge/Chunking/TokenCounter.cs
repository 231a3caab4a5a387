using Enclave.Engine.Tokenization;
using Enclave.Knowledge.Extraction;

namespace Enclave.Knowledge.Chunking;

/// <summary>Counts tokens the way the embedding model will see them, so a chunk fits the model's window.</summary>
public interface ITokenCounter
{
    int Count(string text);
}

/// <summary>Exact counts from the embedding model's own <c>tokenizer.json</c> (special tokens excluded).</summary>
public sealed class TokenizerTokenCounter(HfTokenizer tokenizer) : ITokenCounter
{
    public int Count(string text) => tokenizer.Encode(text, addSpecialTokens: false).Length;
}

/// <summary>
/// The estimate used when a collection has no embedding model: one token per CJK character (BERT-family and
/// SentencePiece vocabularies used for Chinese split ideographs one by one), one per punctuation mark, and one per
/// four characters of a Latin word, rounded up. It overcounts English slightly against WordPiece, which keeps chunks
/// inside the budget.
/// </summary>
public sealed class EstimateTokenCounter : ITokenCounter
{
    public static EstimateTokenCounter Instance { get; } = new();

    public int Count(string text)
    {
        var tokens = 0;
        var word = 0;
        foreach (var c in text)
        {
            if (char.IsLetterOrDigit(c) && !Cjk.IsCjk(c))
            {
                word++;
                continue;
            }

            tokens += (word + 3) / 4;
            word = 0;
            if (!char.IsWhiteSpace(c))
            {
                tokens++;
            }
        }

        return tokens + ((word + 3) / 4);
    }
}
