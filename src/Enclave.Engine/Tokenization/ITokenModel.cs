namespace Enclave.Engine.Tokenization;

/// <summary>The tokenizer.json "model": turns one pre-token into ids (BPE, WordPiece or Unigram).</summary>
internal interface ITokenModel
{
    /// <summary>Highest id in the model's vocabulary.</summary>
    int MaxId { get; }

    /// <summary>Appends the ids of one pre-token.</summary>
    void Tokenize(ReadOnlySpan<char> word, List<int> output);

    int? TokenToId(string token);

    string? IdToToken(int id);
}
