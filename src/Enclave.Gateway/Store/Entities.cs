namespace Enclave.Gateway.Store;

/// <summary>A person or service that owns API keys.</summary>
public sealed class UserEntity
{
    public string Id { get; set; } = Guid.NewGuid().ToString("N");
    public string Name { get; set; } = "";
    public string? DisplayName { get; set; }
    /// <summary><c>active</c> or <c>disabled</c>.</summary>
    public string Status { get; set; } = UserStatus.Active;
    /// <summary>Comma-separated CIDR list; empty or null means any address.</summary>
    public string? AllowedCidrs { get; set; }
    public long CreatedAtMs { get; set; }
}

public static class UserStatus
{
    public const string Active = "active";
    public const string Disabled = "disabled";
}

/// <summary>A named permission set; built-in roles cannot be edited or deleted.</summary>
public sealed class RoleEntity
{
    public string Name { get; set; } = "";
    public string? Description { get; set; }
    /// <summary>Space-separated permission names.</summary>
    public string Permissions { get; set; } = "";
    public bool BuiltIn { get; set; }
    public string? AllowedCidrs { get; set; }
    public long CreatedAtMs { get; set; }
}

/// <summary>An API key. The secret itself is never stored: only its SHA-256 hash and a lookup prefix.</summary>
public sealed class ApiKeyEntity
{
    public string Id { get; set; } = Guid.NewGuid().ToString("N");
    /// <summary>The first characters of the secret after <c>sk-enclave-</c>; indexed for lookup, safe to display.</summary>
    public string Prefix { get; set; } = "";
    public byte[] Hash { get; set; } = [];
    public string? Name { get; set; }
    public string? UserId { get; set; }
    public string Role { get; set; } = "";
    public long CreatedAtMs { get; set; }
    public long? ExpiresAtMs { get; set; }
    public long? RevokedAtMs { get; set; }
    public long? LastUsedAtMs { get; set; }
    public string? AllowedCidrs { get; set; }
    /// <summary>Comma-separated model ids; empty or null means any model.</summary>
    public string? AllowedModels { get; set; }
    public int? RequestsPerMinute { get; set; }
    public int? TokensPerMinute { get; set; }
    /// <summary>PII action applied to prompts sent with this key: allow, mask, tag or block.</summary>
    public string? PromptPiiAction { get; set; }
}

/// <summary>One link of the tamper-evident audit chain.</summary>
public sealed class AuditRecordEntity
{
    /// <summary>Position in the chain, starting at 1, without gaps.</summary>
    public long Sequence { get; set; }
    public long TimestampMs { get; set; }
    public string RequestId { get; set; } = "";
    public string? Principal { get; set; }
    public string? Role { get; set; }
    public string? SourceIp { get; set; }
    public string Method { get; set; } = "";
    public string Endpoint { get; set; } = "";
    public string? Model { get; set; }
    public int Status { get; set; }
    public long LatencyMs { get; set; }
    public int? PromptTokens { get; set; }
    public int? CompletionTokens { get; set; }
    /// <summary>JSON: parameters, prompt, response and policy decisions (already redacted per policy).</summary>
    public string? Details { get; set; }
    public string Algorithm { get; set; } = "";
    public string PrevHash { get; set; } = "";
    public string Hash { get; set; } = "";

    public AuditRecordEntity Copy() => (AuditRecordEntity)MemberwiseClone();
}

/// <summary>A signed statement that the chain had <see cref="Sequence"/> records ending in <see cref="Hash"/>.</summary>
public sealed class AuditCheckpointEntity
{
    public long Id { get; set; }
    public long Sequence { get; set; }
    public string Hash { get; set; } = "";
    public long TimestampMs { get; set; }
    public string PublicKey { get; set; } = "";
    public string Signature { get; set; } = "";
}

/// <summary>Where the hot chain starts after older records were archived.</summary>
public sealed class AuditAnchorEntity
{
    public long Id { get; set; }
    /// <summary>Sequence of the last archived record; the next record's PrevHash must equal <see cref="Hash"/>.</summary>
    public long Sequence { get; set; }
    public string Hash { get; set; } = "";
    public string? ArchiveFile { get; set; }
    public long TimestampMs { get; set; }
    /// <summary>Set when retention deleted the archive file; verification then starts after this anchor.</summary>
    public long? PrunedAtMs { get; set; }
}

/// <summary>Settled tokens of one budget period of one key or user (<c>day:k:ID:20261123</c>).</summary>
public sealed class TokenUsageEntity
{
    public string Counter { get; set; } = "";
    public long Tokens { get; set; }
    public long ExpiresAtMs { get; set; }
}

/// <summary>
/// Run-time policy for a role, user or key, managed through <c>/admin/policies</c> and
/// <c>enclave policies</c>. Conditions only narrow: every CIDR list, model list and time window
/// that applies must allow the request, and the tightest limit wins. PII actions go to the most
/// specific subject (key, then user, then role).
/// </summary>
public sealed class PolicyEntity
{
    /// <summary><c>role</c>, <c>user</c> or <c>key</c>.</summary>
    public string Scope { get; set; } = "";
    /// <summary>Role name, user id or key id.</summary>
    public string Subject { get; set; } = "";
    public string? AllowedCidrs { get; set; }
    public string? AllowedModels { get; set; }
    public int? RequestsPerMinute { get; set; }
    public int? TokensPerMinute { get; set; }
    public long? DailyTokenBudget { get; set; }
    public long? MonthlyTokenBudget { get; set; }
    /// <summary><c>mon-fri 08:00-18:00; sat 09:00-12:00</c>; empty means any time.</summary>
    public string? TimeWindows { get; set; }
    /// <summary>IANA zone the windows are read in; null means the gateway's <c>TimeZone</c>.</summary>
    public string? TimeZone { get; set; }
    public string? PromptPiiAction { get; set; }
    public string? AuditPiiAction { get; set; }
    /// <summary>Extra banned phrases, one per line, added to the global content filter.</summary>
    public string? BlockedPhrases { get; set; }
    public long UpdatedAtMs { get; set; }
}

public static class PolicyScopes
{
    public const string Role = "role";
    public const string User = "user";
    public const string Key = "key";

    public static bool IsValid(string scope) => scope is Role or User or Key;
}
