namespace Enclave.Knowledge.Extraction;

/// <summary>The structural role of a block of text; the chunker never splits a row or list item across chunks unless it is too long.</summary>
public enum BlockKind
{
    Heading,
    Paragraph,
    ListItem,
    TableRow,
    Code,
}

/// <summary>One structural unit of a document in reading order. <paramref name="Level"/> is the heading depth (1 = top).</summary>
public sealed record TextBlock(BlockKind Kind, string Text, int? Page = null, int Level = 0);

/// <summary>What an extractor reads from a file: title, blocks in reading order, page count and string metadata.</summary>
public sealed class ExtractedDocument
{
    public string Title { get; set; } = "";

    public List<TextBlock> Blocks { get; } = [];

    /// <summary>Pages for paged formats (PDF), 0 otherwise.</summary>
    public int PageCount { get; set; }

    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);
}

/// <summary>Thrown when a file cannot be read as the format its name says; the message names the file and the problem.</summary>
public sealed class DocumentFormatException(string message, Exception? inner = null) : Exception(message, inner);
