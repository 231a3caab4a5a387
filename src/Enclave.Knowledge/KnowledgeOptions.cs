using Enclave.Knowledge.Search;

namespace Enclave.Knowledge;

/// <summary>Where and how the knowledge base keeps its data (configuration section <c>Enclave:Knowledge</c>).</summary>
public sealed class KnowledgeOptions
{
    /// <summary>Data directory; default <c>ENCLAVE_HOME/knowledge</c>.</summary>
    public string? Directory { get; set; }

    /// <summary>PostgreSQL connection string for the collection/document/chunk store; null keeps SQLite in <see cref="Directory"/>.</summary>
    public string? Postgres { get; set; }

    /// <summary>Key file (<c>id:base64key</c> lines) sealing encrypted collections; default <c>DIRECTORY/keys/knowledge.keys</c>, created on first use.</summary>
    public string? KeyFile { get; set; }

    /// <summary>BM25 analysis for new collections (see <see cref="Bm25Analyzers"/>).</summary>
    public string Bm25Analyzer { get; set; } = Bm25Analyzers.Default;

    /// <summary>Texts per embedding call.</summary>
    public int EmbeddingBatchSize { get; set; } = 32;

    /// <summary>Largest file accepted for ingestion.</summary>
    public long MaxDocumentBytes { get; set; } = 64L << 20;

    /// <summary>System prompt for grounded answers to English questions; <c>{context}</c> becomes the numbered passages.</summary>
    public string PromptEn { get; set; } =
        "Answer the user's question using only the numbered passages below. Cite every passage you use as [n]. "
        + "If the passages do not contain the answer, say that you do not know.\n\n{context}";

    /// <summary>System prompt for grounded answers to Chinese questions (any CJK character in the question selects it).</summary>
    public string PromptZh { get; set; } =
        "请仅根据下面编号的资料回答用户的问题，并用 [n] 标注引用的资料。如果资料中没有答案，请直接说明不知道。\n\n{context}";

    public string ResolveDirectory() =>
        System.IO.Path.GetFullPath(Directory ?? System.IO.Path.Combine(Enclave.Gateway.Store.EnclaveHome.Resolve(), "knowledge"));
}

/// <summary>Settings of a new collection.</summary>
public sealed record CollectionSpec(string Name)
{
    public string Description { get; init; } = "";

    public string? EmbeddingModel { get; init; }

    public int ChunkTokens { get; init; } = 256;

    public int ChunkOverlap { get; init; } = 32;

    public string PiiPolicy { get; init; } = Store.PiiPolicies.Mask;

    /// <summary>Null (clear), <c>aes-256-gcm</c> or <c>sm4-gcm</c>.</summary>
    public string? Encryption { get; init; }

    /// <summary>Principals (<c>user:NAME</c>, <c>role:NAME</c>) that may search.</summary>
    public IReadOnlyList<string> Readers { get; init; } = [];

    /// <summary>Principals that may also add and delete documents.</summary>
    public IReadOnlyList<string> Writers { get; init; } = [];
}

/// <summary>A refused operation the caller can fix or is not allowed to do; <see cref="Status"/> is the HTTP status it maps to.</summary>
public sealed class KnowledgeException(int status, string message, string code) : Exception(message)
{
    public int Status { get; } = status;

    public string Code { get; } = code;

    public static KnowledgeException NotFound(string what) => new(404, what, "not_found");

    public static KnowledgeException Forbidden(string what) => new(403, what, "permission_denied");

    public static KnowledgeException Invalid(string what) => new(400, what, "invalid_request");
}
