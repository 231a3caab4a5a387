namespace Enclave.Engine.Tokenization;

/// <summary>Adds special tokens around an encoded sequence or pair (tokenizer.json "post_processor").</summary>
internal abstract class PostProcessor
{
    /// <summary>Returns the final ids for a single sequence when special tokens are requested.</summary>
    public abstract List<int> Process(List<int> ids);

    /// <summary>
    /// The final ids and token type ids for a sequence and an optional second one (a cross-encoder's query and
    /// passage). The default joins them with no special tokens, types 0 then 1, as tokenizers does.
    /// </summary>
    public virtual (List<int> Ids, List<int> TypeIds) ProcessPair(List<int> a, List<int>? b)
    {
        var ids = new List<int>(a);
        var types = new List<int>(new int[a.Count]);
        if (b is not null)
        {
            ids.AddRange(b);
            types.AddRange(Enumerable.Repeat(1, b.Count));
        }
        return (ids, types);
    }

    /// <summary>How many special tokens <see cref="ProcessPair"/> adds (the budget truncation must leave for them).</summary>
    public virtual int AddedTokens(bool pair) => 0;
}

/// <summary>Byte-level post-processing only adjusts offsets; ids pass through.</summary>
internal sealed class PassThroughPostProcessor : PostProcessor
{
    public override List<int> Process(List<int> ids) => ids;
}

/// <summary>One item of a template: a special token's ids, or sequence A (0) or B (1), with its token type id.</summary>
internal readonly record struct TemplatePiece(int[]? SpecialIds, int Sequence, int TypeId);

/// <summary>"single" and "pair" templates: special-token pieces and the sequence placeholders, in order.</summary>
internal sealed class TemplatePostProcessor : PostProcessor
{
    private readonly TemplatePiece[] _single;
    private readonly TemplatePiece[]? _pair;

    /// <summary>A single-sequence template from special-token ids, null where the sequence goes; no pair template.</summary>
    public TemplatePostProcessor(IReadOnlyList<int[]?> pieces)
        : this([.. pieces.Select(p => new TemplatePiece(p, 0, 0))], null)
    {
    }

    public TemplatePostProcessor(TemplatePiece[] single, TemplatePiece[]? pair)
    {
        _single = single;
        _pair = pair;
    }

    public override List<int> Process(List<int> ids) => Apply(_single, ids, null).Ids;

    public override (List<int> Ids, List<int> TypeIds) ProcessPair(List<int> a, List<int>? b)
    {
        if (b is null)
            return Apply(_single, a, null);
        if (_pair is null)
            throw new NotSupportedException("this tokenizer's post-processor has no template for pairs of sequences");
        return Apply(_pair, a, b);
    }

    public override int AddedTokens(bool pair)
    {
        var count = 0;
        foreach (var p in pair ? _pair ?? [] : _single)
            count += p.SpecialIds?.Length ?? 0;
        return count;
    }

    private static (List<int> Ids, List<int> TypeIds) Apply(TemplatePiece[] template, List<int> a, List<int>? b)
    {
        var ids = new List<int>(a.Count + (b?.Count ?? 0) + template.Length);
        var types = new List<int>(ids.Capacity);
        foreach (var p in template)
        {
            var part = p.SpecialIds ?? (p.Sequence == 0 ? a : b ?? []).ToArray();
            ids.AddRange(part);
            types.AddRange(Enumerable.Repeat(p.TypeId, part.Length));
        }
        return (ids, types);
    }
}

internal sealed class SequencePostProcessor(PostProcessor[] steps) : PostProcessor
{
    public override List<int> Process(List<int> ids)
    {
        foreach (var s in steps)
            ids = s.Process(ids);
        return ids;
    }

    /// <summary>Only one step may define special tokens for pairs (in practice ByteLevel + a template).</summary>
    public override (List<int> Ids, List<int> TypeIds) ProcessPair(List<int> a, List<int>? b)
    {
        var adding = steps.FirstOrDefault(s => s is not PassThroughPostProcessor);
        return adding is null ? base.ProcessPair(a, b) : adding.ProcessPair(a, b);
    }

    public override int AddedTokens(bool pair) => steps.Sum(s => s.AddedTokens(pair));
}
