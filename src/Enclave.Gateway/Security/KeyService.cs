using System.Collections.Concurrent;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Security;

public sealed record CreatedKey(ApiKeyEntity Key, string Secret);

public sealed record KeyCreateRequest(
    string Role,
    string? Name = null,
    string? User = null,
    DateTimeOffset? ExpiresAt = null,
    string? AllowedCidrs = null,
    string? AllowedModels = null,
    int? RequestsPerMinute = null,
    int? TokensPerMinute = null,
    string? PromptPiiAction = null);

/// <summary>The identity a request was authenticated as.</summary>
public sealed record GatewayPrincipal(
    string KeyId,
    string KeyPrefix,
    string? KeyName,
    string? UserId,
    string? UserName,
    string Role,
    IReadOnlySet<string> Permissions,
    CidrList KeyCidrs,
    CidrList UserCidrs,
    CidrList RoleCidrs,
    IReadOnlySet<string> AllowedModels,
    int? RequestsPerMinute,
    int? TokensPerMinute,
    string? PromptPiiAction,
    long? ExpiresAtMs)
{
    public string Display => UserName ?? KeyName ?? ("key:" + KeyPrefix);

    /// <summary>Run-time policies of the key, its user and its role, composed.</summary>
    public EffectivePolicy Policy { get; init; } = EffectivePolicy.None;

    public bool Has(string permission) => Permissions.Contains(permission);
}

/// <summary>Creates, lists, revokes and authenticates API keys.</summary>
public sealed class KeyService(GatewayStore store, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ConcurrentDictionary<string, (GatewayPrincipal? Principal, byte[] Hash, long LoadedAtMs)> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _lastUsedWritten = new(StringComparer.Ordinal);

    /// <summary>
    /// How long a validated key is trusted without re-reading the store. Revocation through this
    /// instance is immediate; revocation on another replica takes effect within this bound.
    /// </summary>
    public TimeSpan CacheTtl { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Zone for time windows whose policy names none.</summary>
    public NodaTime.DateTimeZone DefaultZone { get; set; } = NodaTime.DateTimeZone.Utc;

    /// <summary>
    /// Tells the other replicas to drop their cached principals (set when Redis is configured);
    /// without it they follow within <see cref="CacheTtl"/>.
    /// </summary>
    public Func<CancellationToken, Task>? Broadcast { get; set; }

    /// <summary>Drops cached principals here and, when a broadcast is configured, on every replica.</summary>
    public async Task InvalidateEverywhereAsync(CancellationToken ct = default)
    {
        _cache.Clear();
        if (Broadcast is { } b)
        {
            await b(ct);
        }
    }

    private long NowMs => _time.GetUtcNow().ToUnixTimeMilliseconds();

    public async Task<CreatedKey> CreateAsync(KeyCreateRequest req, CancellationToken ct = default)
    {
        CidrList.Parse(req.AllowedCidrs);
        if (req.PromptPiiAction is not null && !Pii.PiiActions.IsValid(req.PromptPiiAction))
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_pii_action", "PII action must be allow, mask, tag or block.");
        }

        await using var db = store.CreateContext();
        if (!await db.Roles.AnyAsync(r => r.Name == req.Role, ct))
        {
            throw new GatewayException(400, "invalid_request_error", "unknown_role", $"Role '{req.Role}' does not exist.", "role");
        }

        string? userId = null;
        if (!string.IsNullOrEmpty(req.User))
        {
            var user = await db.Users.FirstOrDefaultAsync(u => u.Name == req.User || u.Id == req.User, ct)
                ?? throw new GatewayException(400, "invalid_request_error", "unknown_user", $"User '{req.User}' does not exist.", "user");
            userId = user.Id;
        }

        if (req.ExpiresAt is { } exp && exp <= _time.GetUtcNow())
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_expiry", "Expiry must be in the future.", "expires");
        }

        for (var attempt = 0; ; attempt++)
        {
            var secret = ApiKeySecret.Generate();
            var key = new ApiKeyEntity
            {
                Prefix = ApiKeySecret.PrefixOf(secret),
                Hash = ApiKeySecret.Hash(secret),
                Name = req.Name,
                UserId = userId,
                Role = req.Role,
                CreatedAtMs = NowMs,
                ExpiresAtMs = req.ExpiresAt?.ToUnixTimeMilliseconds(),
                AllowedCidrs = req.AllowedCidrs,
                AllowedModels = req.AllowedModels,
                RequestsPerMinute = req.RequestsPerMinute,
                TokensPerMinute = req.TokensPerMinute,
                PromptPiiAction = req.PromptPiiAction,
            };
            db.ApiKeys.Add(key);
            try
            {
                await db.SaveChangesAsync(ct);
                return new CreatedKey(key, secret);
            }
            catch (DbUpdateException) when (attempt < 3)
            {
                // A prefix collision (about 2^-71 per pair) - draw again.
                db.ChangeTracker.Clear();
            }
        }
    }

    public async Task<List<ApiKeyEntity>> ListAsync(CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.ApiKeys.AsNoTracking().OrderBy(k => k.CreatedAtMs).ToListAsync(ct);
    }

    /// <summary>Revokes by id or prefix. Returns false when no such key exists.</summary>
    public async Task<bool> RevokeAsync(string idOrPrefix, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var key = await db.ApiKeys.FirstOrDefaultAsync(k => k.Id == idOrPrefix || k.Prefix == idOrPrefix, ct);
        if (key is null)
        {
            return false;
        }

        key.RevokedAtMs ??= NowMs;
        await db.SaveChangesAsync(ct);
        _cache.TryRemove(key.Prefix, out _);
        await InvalidateEverywhereAsync(ct);
        return true;
    }

    /// <summary>Drops cached principals so policy changes apply to the next request.</summary>
    public void InvalidateCache() => _cache.Clear();

    /// <summary>
    /// Returns the principal for a presented secret, or null when it is unknown, revoked, expired
    /// or its user is disabled. The hash comparison is constant-time.
    /// </summary>
    public async Task<GatewayPrincipal?> AuthenticateAsync(string? secret, CancellationToken ct = default)
    {
        if (!ApiKeySecret.LooksValid(secret))
        {
            return null;
        }

        var prefix = ApiKeySecret.PrefixOf(secret!);
        var now = NowMs;
        var presentedHash = ApiKeySecret.Hash(secret!);
        if (_cache.TryGetValue(prefix, out var cached) && now - cached.LoadedAtMs < CacheTtl.TotalMilliseconds)
        {
            return Check(cached.Principal, cached.Hash, presentedHash, now);
        }

        await using var db = store.CreateContext();
        var key = await db.ApiKeys.AsNoTracking().FirstOrDefaultAsync(k => k.Prefix == prefix, ct);
        if (key is null)
        {
            // Same work as a hit so a miss is not faster.
            System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(presentedHash, new byte[32]);
            return null;
        }

        GatewayPrincipal? principal = null;
        if (key.RevokedAtMs is null)
        {
            var role = await db.Roles.AsNoTracking().FirstOrDefaultAsync(r => r.Name == key.Role, ct);
            UserEntity? user = key.UserId is null ? null : await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.Id == key.UserId, ct);
            var userOk = key.UserId is null || (user is not null && user.Status == UserStatus.Active);
            if (role is not null && userOk)
            {
                var policies = await db.Policies.AsNoTracking()
                    .Where(p => (p.Scope == PolicyScopes.Key && p.Subject == key.Id)
                        || (p.Scope == PolicyScopes.Role && p.Subject == role.Name)
                        || (key.UserId != null && p.Scope == PolicyScopes.User && p.Subject == key.UserId))
                    .ToListAsync(ct);
                var composed = EffectivePolicy.Compose(
                    policies.FirstOrDefault(p => p.Scope == PolicyScopes.Key),
                    policies.FirstOrDefault(p => p.Scope == PolicyScopes.User),
                    policies.FirstOrDefault(p => p.Scope == PolicyScopes.Role),
                    key, DefaultZone);
                principal = new GatewayPrincipal(
                    key.Id, key.Prefix, key.Name, user?.Id, user?.Name, role.Name,
                    role.Permissions.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal),
                    CidrList.Parse(key.AllowedCidrs), CidrList.Parse(user?.AllowedCidrs), CidrList.Parse(role.AllowedCidrs),
                    (key.AllowedModels ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal),
                    key.RequestsPerMinute, key.TokensPerMinute, key.PromptPiiAction, key.ExpiresAtMs)
                {
                    Policy = composed,
                };
            }
        }

        _cache[prefix] = (principal, key.Hash, now);
        return Check(principal, key.Hash, presentedHash, now);
    }

    private static GatewayPrincipal? Check(GatewayPrincipal? principal, byte[] storedHash, byte[] presentedHash, long now)
    {
        var match = System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(presentedHash, storedHash);
        if (!match || principal is null)
        {
            return null;
        }

        return principal.ExpiresAtMs is { } exp && exp <= now ? null : principal;
    }

    /// <summary>Records last use, at most once a minute per key, so the hot path rarely writes.</summary>
    public async Task TouchAsync(string keyId, CancellationToken ct = default)
    {
        var now = NowMs;
        if (_lastUsedWritten.TryGetValue(keyId, out var last) && now - last < 60_000)
        {
            return;
        }

        _lastUsedWritten[keyId] = now;
        await using var db = store.CreateContext();
        await db.ApiKeys.Where(k => k.Id == keyId).ExecuteUpdateAsync(s => s.SetProperty(k => k.LastUsedAtMs, now), ct);
    }

    /// <summary>
    /// On an empty store (no keys at all), creates an <c>admin</c> key and returns its secret;
    /// otherwise null. There are no default passwords.
    /// </summary>
    public async Task<CreatedKey?> BootstrapAsync(CancellationToken ct = default)
    {
        await using (var db = store.CreateContext())
        {
            if (await db.ApiKeys.AnyAsync(ct))
            {
                return null;
            }
        }

        return await CreateAsync(new KeyCreateRequest(BuiltInRoles.Admin, Name: "bootstrap-admin"), ct);
    }
}
