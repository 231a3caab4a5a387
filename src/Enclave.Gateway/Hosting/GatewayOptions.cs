using Enclave.Gateway.Audit;
using Enclave.Gateway.Pii;

namespace Enclave.Gateway.Hosting;

/// <summary>Bound from the <c>Enclave:Gateway</c> configuration section.</summary>
public sealed class GatewayOptions
{
    public const string Section = "Enclave:Gateway";

    /// <summary>Data directory; defaults to <c>ENCLAVE_HOME</c> or <c>~/.enclave</c>.</summary>
    public string? Home { get; set; }

    /// <summary>Connection string; empty means the SQLite file under <see cref="Home"/>.</summary>
    public string? Database { get; set; }

    /// <summary>Skip authentication (every caller is a local admin). Only for loopback-bound servers.</summary>
    public bool NoAuth { get; set; }

    /// <summary>Create and print an admin key when the store has no keys.</summary>
    public bool Bootstrap { get; set; } = true;

    /// <summary>Apply migrations at start-up.</summary>
    public bool Migrate { get; set; } = true;

    /// <summary>Path prefixes that always require a key, even when no endpoint matched.</summary>
    public string[] ProtectedPrefixes { get; set; } = ["/v1", "/admin"];

    /// <summary>Comma-separated CIDRs of reverse proxies whose <c>X-Forwarded-For</c> is believed.</summary>
    public string? TrustedProxies { get; set; }

    public int KeyCacheSeconds { get; set; } = 5;
    public int FailedAuthMaxFailures { get; set; } = 10;
    public int FailedAuthWindowSeconds { get; set; } = 60;

    public string AuditHash { get; set; } = ChainHash.Sha256;
    public int AuditCheckpointEvery { get; set; } = 100;

    /// <summary>Ed25519 key that signs audit checkpoints; defaults to <c>HOME/keys/audit-ed25519.key</c>.</summary>
    public string? AuditSigningKeyFile { get; set; }

    /// <summary>What happens to PII in stored audit records (default: masked).</summary>
    public string AuditPiiAction { get; set; } = PiiActions.Mask;

    /// <summary>Default for prompts when the key sets none (default: reaches the model unchanged).</summary>
    public string PromptPiiAction { get; set; } = PiiActions.Allow;

    /// <summary>Largest request or response body kept in an audit record.</summary>
    public int AuditBodyLimitBytes { get; set; } = 64 * 1024;

    /// <summary>Banned phrases (zh/en) refused in prompts and cut from responses.</summary>
    public string[] BlockedPhrases { get; set; } = [];

    /// <summary>
    /// Redis connection string (StackExchange.Redis form, e.g. <c>redis1:6379,password=...</c>). When set,
    /// rate-limit counters and token budgets are shared by every replica and revocations and policy
    /// changes reach the other replicas at once; when empty, the limiter is in process memory.
    /// </summary>
    public string? Redis { get; set; }

    /// <summary>Prefix of the limiter's Redis keys, so several deployments can share one server.</summary>
    public string RedisKeyPrefix { get; set; } = "enclave:";

    /// <summary>IANA time zone of daily/monthly budget periods and of time windows that name none.</summary>
    public string TimeZone { get; set; } = "UTC";

    /// <summary>Completion tokens reserved at admission when the request sets no <c>max_tokens</c>.</summary>
    public int ReserveCompletionTokens { get; set; } = 256;

    /// <summary>Days audit records stay in the store before the retention service archives them; 0 keeps them all.</summary>
    public int AuditRetentionDays { get; set; } = 90;

    /// <summary>Days archive files are kept (default 5 years); 0 keeps them forever.</summary>
    public int AuditArchiveKeepDays { get; set; } = 5 * 365 + 1;

    /// <summary>Where archive files go; defaults to <c>HOME/audit-archive</c>.</summary>
    public string? AuditArchiveDirectory { get; set; }

    /// <summary>How often the retention service looks for records to archive.</summary>
    public int AuditRetentionIntervalMinutes { get; set; } = 60;

    /// <summary>Encrypt the prompt/response details of audit records (envelope encryption).</summary>
    public bool EncryptAudit { get; set; }

    /// <summary><c>aes-256-gcm</c> (default) or <c>sm4-gcm</c>.</summary>
    public string EncryptionAlgorithm { get; set; } = Crypto.Aead.Aes256Gcm;

    /// <summary>Master key source: <c>file</c> (default) or <c>env</c>.</summary>
    public string KeyProvider { get; set; } = "file";

    /// <summary>Master key file for the <c>file</c> provider; defaults to <c>HOME/keys/master.keys</c> (created on first use).</summary>
    public string? MasterKeyFile { get; set; }

    /// <summary>Environment variable holding the master keys for the <c>env</c> provider.</summary>
    public string MasterKeyVariable { get; set; } = Crypto.EnvironmentKeyProvider.DefaultVariable;

    public string ResolveHome() => Store.EnclaveHome.Resolve(Home);
}
