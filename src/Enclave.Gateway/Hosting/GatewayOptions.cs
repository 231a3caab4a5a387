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

    public string ResolveHome() => Store.EnclaveHome.Resolve(Home);
}
