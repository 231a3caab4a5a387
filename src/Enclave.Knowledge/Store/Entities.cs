namespace Enclave.Knowledge.Store;

/// <summary>What to do with personal data found in a document before it is stored or embedded.</summary>
public static class PiiPolicies
{
    /// <summary>Store the text as written (the collection is trusted with it).</summary>
    public const string Keep = "keep";

    /// <summary>Replace each detected value with its masked form (<c>138****8000</c>).</summary>
    public const string Mask = "mask";

    /// <summary>Refuse the whole document when anything is detected; nothing of it is stored.</summary>
    public const string Drop = "drop";

    public static bool IsValid(string policy) => policy is Keep or Mask or Drop;
}

/// <summary>A named set of documents with its own indexes, settings and readers/writers.</summary>
public sealed class KnowledgeCollection
{
    public long Id { get; set; }

    public string Name { get; set; } = "";

    /// <summary>The user who created it; always allowed to read, write and delete it.</summary>
    public string Owner { get; set; } = "";

    public string Description { get; set; } = "";

    /// <summary>Directory of the embedding model (Hugging Face layout); null means BM25 only.</summary>
    public string? EmbeddingModel { get; set; }

    /// <summary>Vector width, fixed by the first embedding written.</summary>
    public int? VectorDimensions { get; set; }

    /// <summary>Token budget of one chunk, counted with the embedding model's tokenizer when there is one.</summary>
    public int ChunkTokens { get; set; } = 256;

    /// <summary>Tokens repeated from the end of one chunk at the start of the next.</summary>
    public int ChunkOverlap { get; set; } = 32;

    /// <summary>One of <see cref="PiiPolicies"/>.</summary>
    public string PiiPolicy { get; set; } = PiiPolicies.Mask;

    /// <summary>Null: stored text in clear; otherwise the AEAD (<c>aes-256-gcm</c> or <c>sm4-gcm</c>) sealing it.</summary>
    public string? Encryption { get; set; }

    public DateTime CreatedUtc { get; set; }

    public List<CollectionAccess> Access { get; set; } = [];
}

/// <summary>One principal allowed on a collection: <c>user:NAME</c> or <c>role:NAME</c>.</summary>
public sealed class CollectionAccess
{
    public long Id { get; set; }

    public long CollectionId { get; set; }

    public string Principal { get; set; } = "";

    /// <summary>Readers may search; writers may also add and delete documents.</summary>
    public bool CanWrite { get; set; }
}

/// <summary>Lifecycle of a document.</summary>
public static class DocumentStatus
{
    public const string Ingesting = "ingesting";
    public const string Ready = "ready";
    public const string Failed = "failed";

    /// <summary>Refused by the collection's PII policy <c>drop</c>.</summary>
    public const string Dropped = "dropped";
}

/// <summary>A source file in a collection. Only chunks of its <see cref="Generation"/> are live.</summary>
public sealed class KnowledgeDocument
{
    public long Id { get; set; }

    public long CollectionId { get; set; }

    /// <summary>The name the document is known by (relative path or upload file name); unique per collection.</summary>
    public string Source { get; set; } = "";

    public string Title { get; set; } = "";

    /// <summary>SHA-256 (hex) of the file bytes: an unchanged file is not ingested again.</summary>
    public string ContentHash { get; set; } = "";

    /// <summary>JSON object of string metadata (format, page count, author …) used for filtering.</summary>
    public string MetadataJson { get; set; } = "{}";

    public string Status { get; set; } = DocumentStatus.Ingesting;

    public string? Error { get; set; }

    /// <summary>Bumped by each successful ingestion; older chunks are dead and get deleted.</summary>
    public int Generation { get; set; }

    /// <summary>Cleaned, scrubbed text the chunks' character spans point into (sealed when the collection is encrypted).</summary>
    public string Text { get; set; } = "";

    public int PageCount { get; set; }

    public DateTime UpdatedUtc { get; set; }
}

/// <summary>A passage of a document: the unit that is indexed, retrieved and cited.</summary>
public sealed class KnowledgeChunk
{
    public long Id { get; set; }

    public long CollectionId { get; set; }

    public long DocumentId { get; set; }

    public int Generation { get; set; }

    public int Ordinal { get; set; }

    /// <summary>The passage (sealed when the collection is encrypted).</summary>
    public string Text { get; set; } = "";

    /// <summary>1-based page for paged formats (PDF, spreadsheets' sheets are not pages), else null.</summary>
    public int? Page { get; set; }

    /// <summary>Headings above the passage, outermost first, joined by " > ".</summary>
    public string HeadingPath { get; set; } = "";

    /// <summary>Start of the passage in the document's cleaned text (UTF-16 offset).</summary>
    public int CharStart { get; set; }

    public int CharEnd { get; set; }

    public int TokenCount { get; set; }
}

/// <summary>Steps of an ingestion job, in order; a resumed job starts after the last one it recorded.</summary>
public static class IngestStage
{
    public const string Queued = "queued";
    public const string Chunked = "chunked";
    public const string Embedded = "embedded";
    public const string Indexed = "indexed";
    public const string Committed = "committed";
}

public static class JobStatus
{
    public const string Queued = "queued";
    public const string Running = "running";
    public const string Succeeded = "succeeded";

    /// <summary>The file was already ingested with the same content.</summary>
    public const string Unchanged = "unchanged";

    public const string Failed = "failed";
}

/// <summary>The ingestion of one file, visible over the API while it runs.</summary>
public sealed class IngestJob
{
    public string Id { get; set; } = "";

    public long CollectionId { get; set; }

    public long? DocumentId { get; set; }

    public string Source { get; set; } = "";

    /// <summary>The uploaded bytes kept under the collection directory so a job can resume after a restart.</summary>
    public string StoredFile { get; set; } = "";

    public string ContentHash { get; set; } = "";

    public string Stage { get; set; } = IngestStage.Queued;

    public string Status { get; set; } = JobStatus.Queued;

    public string? Error { get; set; }

    public int Chunks { get; set; }

    /// <summary>Generation the job's chunks are written under.</summary>
    public int Generation { get; set; }

    /// <summary>Title, cleaned text (sealed when encrypted), metadata and pages of the new version, moved to the document at commit.</summary>
    public string PendingTitle { get; set; } = "";

    public string PendingText { get; set; } = "";

    public string PendingMetadataJson { get; set; } = "{}";

    public int PendingPageCount { get; set; }

    /// <summary>What cleaning did: boilerplate blocks and duplicate chunks removed, PII types masked.</summary>
    public string Notes { get; set; } = "";

    public DateTime CreatedUtc { get; set; }

    public DateTime UpdatedUtc { get; set; }
}
