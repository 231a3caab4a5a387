namespace Enclave.Engine.Tokenization;

/// <summary>Adds special tokens around an encoded sequence (tokenizer.json "post_processor").</summary>
internal abstract class PostProcessor
{
    /// <summary>Returns the final ids for a single sequence when special tokens are requested.</summary>
    public abstract List<int> Process(List<int> ids);
}

/// <summary>Byte-level post-processing only adjusts offsets; ids pass through.</summary>
internal sealed class PassThroughPostProcessor : PostProcessor
{
    public override List<int> Process(List<int> ids) => ids;
}

/// <summary>A "single" template: special-token pieces and the sequence placeholder, in order.</summary>
internal sealed class TemplatePostProcessor(IReadOnlyList<int[]?> pieces) : PostProcessor
{
    /// <summary>Each entry is the ids of a special token, or null where the sequence goes.</summary>
    public IReadOnlyList<int[]?> Pieces => pieces;

    public override List<int> Process(List<int> ids)
    {
        var result = new List<int>(ids.Count + pieces.Count);
        foreach (var p in pieces)
        {
            if (p is null)
                result.AddRange(ids);
            else
                result.AddRange(p);
        }
        return result;
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
}
