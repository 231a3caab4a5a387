using System.Text;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// Every encode and decode case recorded from transformers 5 (tests/fixtures/tokenizers) must come out identical.
/// </summary>
public sealed class RealTokenizerParityTests
{
    private static readonly Dictionary<string, HfTokenizer> Loaded = [];

    public static TheoryData<string> Tokenizers => [.. TokenizerFixtures.Names];

    private static HfTokenizer Load(string name)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(name, out var tok))
                Loaded[name] = tok = HfTokenizer.FromDirectory(TokenizerFixtures.TokenizerDirectory(name));
            return tok;
        }
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Encode_matches_transformers(string name)
    {
        var tok = Load(name);
        var reference = TokenizerFixtures.LoadReference(name);
        Assert.NotEmpty(reference.Encode);
        var failures = new StringBuilder();
        int failed = 0;
        foreach (var c in reference.Encode)
        {
            var ids = tok.Encode(c.Text, c.AddSpecialTokens);
            if (!ids.AsSpan().SequenceEqual(c.Ids))
            {
                failed++;
                failures.AppendLine($"text={TokenizerFixtures.Show(c.Text)} special={c.AddSpecialTokens}")
                    .AppendLine($"  expected {TokenizerFixtures.Show(c.Ids)}")
                    .AppendLine($"  actual   {TokenizerFixtures.Show(ids)}");
            }
        }
        Assert.True(failed == 0, $"{name}: {failed}/{reference.Encode.Count} encodings differ\n{failures}");
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Decode_matches_transformers(string name)
    {
        var tok = Load(name);
        var reference = TokenizerFixtures.LoadReference(name);
        Assert.NotEmpty(reference.Decode);
        var failures = new StringBuilder();
        int failed = 0;
        foreach (var c in reference.Decode)
        {
            var text = tok.Decode(c.Ids, c.SkipSpecialTokens);
            if (text != c.Text)
            {
                failed++;
                failures.AppendLine($"ids={TokenizerFixtures.Show(c.Ids)} skip={c.SkipSpecialTokens}")
                    .AppendLine($"  expected {TokenizerFixtures.Show(c.Text)}")
                    .AppendLine($"  actual   {TokenizerFixtures.Show(text)}");
            }
        }
        Assert.True(failed == 0, $"{name}: {failed}/{reference.Decode.Count} decodings differ\n{failures}");
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Incremental_decoding_concatenates_to_decode_without_replacement_characters(string name)
    {
        var tok = Load(name);
        var reference = TokenizerFixtures.LoadReference(name);
        var failures = new StringBuilder();
        foreach (var c in reference.Decode)
        {
            var expected = tok.Decode(c.Ids, c.SkipSpecialTokens);
            var stream = tok.CreateIncrementalDecoder(c.SkipSpecialTokens);
            var sb = new StringBuilder();
            bool garbage = false;
            foreach (int id in c.Ids)
            {
                var chunk = stream.Append(id);
                garbage |= chunk.Contains('\uFFFD') && !expected.Contains('\uFFFD');
                sb.Append(chunk);
            }
            sb.Append(stream.Flush());
            if (sb.ToString() != expected || garbage)
            {
                failures.AppendLine($"ids={TokenizerFixtures.Show(c.Ids)} skip={c.SkipSpecialTokens} garbage={garbage}")
                    .AppendLine($"  decode {TokenizerFixtures.Show(expected)}")
                    .AppendLine($"  stream {TokenizerFixtures.Show(sb.ToString())}");
            }
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Special_token_ids_follow_the_config(string name)
    {
        var tok = Load(name);
        if (tok.Config.BosToken is not null)
        {
            Assert.Equal(tok.TokenToId(tok.Config.BosToken), tok.BosTokenId);
            Assert.True(tok.IsSpecial(tok.BosTokenId!.Value));
            Assert.Equal(tok.Config.BosToken, tok.IdToToken(tok.BosTokenId.Value));
        }
        Assert.NotNull(tok.EosTokenId);
        Assert.True(tok.IsSpecial(tok.EosTokenId!.Value));
        Assert.True(tok.VocabSize > tok.EosTokenId.Value);
        Assert.Null(tok.IdToToken(tok.VocabSize));
    }
}
