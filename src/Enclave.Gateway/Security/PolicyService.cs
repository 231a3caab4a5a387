using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Security;

/// <summary>The fields of a policy as sent to <c>PUT /admin/policies/{scope}/{subject}</c> or <c>enclave policies set</c>.</summary>
public sealed record PolicyFields(
    string? AllowedCidrs = null,
    string? AllowedModels = null,
    int? RequestsPerMinute = null,
    int? TokensPerMinute = null,
    long? DailyTokenBudget = null,
    long? MonthlyTokenBudget = null,
    string? TimeWindows = null,
    string? TimeZone = null,
    string? PromptPiiAction = null,
    string? AuditPiiAction = null,
    string[]? BlockedPhrases = null);

/// <summary>Reads, validates and writes run-time policies; every change reaches all replicas' caches.</summary>
public sealed class PolicyService(GatewayStore store, KeyService keys, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public async Task<List<PolicyEntity>> ListAsync(CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.Policies.AsNoTracking().OrderBy(p => p.Scope).ThenBy(p => p.Subject).ToListAsync(ct);
    }

    public async Task<PolicyEntity?> GetAsync(string scope, string subject, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var id = await ResolveAsync(db, scope, subject, ct);
        return await db.Policies.AsNoTracking().FirstOrDefaultAsync(p => p.Scope == scope && p.Subject == id, ct);
    }

    /// <summary>Replaces the policy of one role, user or key with <paramref name="fields"/>.</summary>
    public async Task<PolicyEntity> SetAsync(string scope, string subject, PolicyFields fields, CancellationToken ct = default)
    {
        Validate(fields);
        await using var db = store.CreateContext();
        var id = await ResolveAsync(db, scope, subject, ct);
        var row = await db.Policies.FirstOrDefaultAsync(p => p.Scope == scope && p.Subject == id, ct);
        if (row is null)
        {
            row = new PolicyEntity { Scope = scope, Subject = id };
            db.Policies.Add(row);
        }

        row.AllowedCidrs = Blank(fields.AllowedCidrs);
        row.AllowedModels = Blank(fields.AllowedModels);
        row.RequestsPerMinute = fields.RequestsPerMinute;
        row.TokensPerMinute = fields.TokensPerMinute;
        row.DailyTokenBudget = fields.DailyTokenBudget;
        row.MonthlyTokenBudget = fields.MonthlyTokenBudget;
        row.TimeWindows = Blank(fields.TimeWindows);
        row.TimeZone = Blank(fields.TimeZone);
        row.PromptPiiAction = Blank(fields.PromptPiiAction);
        row.AuditPiiAction = Blank(fields.AuditPiiAction);
        row.BlockedPhrases = fields.BlockedPhrases is { Length: > 0 } phrases
            ? string.Join('\n', phrases.Select(p => p.Trim()).Where(p => p.Length > 0))
            : null;
        row.UpdatedAtMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        await db.SaveChangesAsync(ct);
        await keys.InvalidateEverywhereAsync(ct);
        return row;
    }

    public async Task<bool> RemoveAsync(string scope, string subject, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var id = await ResolveAsync(db, scope, subject, ct);
        var removed = await db.Policies.Where(p => p.Scope == scope && p.Subject == id).ExecuteDeleteAsync(ct);
        await keys.InvalidateEverywhereAsync(ct);
        return removed > 0;
    }

    public static PolicyFields FieldsOf(PolicyEntity? p) => p is null ? new PolicyFields() : new PolicyFields(
        p.AllowedCidrs, p.AllowedModels, p.RequestsPerMinute, p.TokensPerMinute, p.DailyTokenBudget, p.MonthlyTokenBudget,
        p.TimeWindows, p.TimeZone, p.PromptPiiAction, p.AuditPiiAction,
        p.BlockedPhrases is null ? null : [.. EffectivePolicy.SplitPhrases(p.BlockedPhrases)]);

    /// <summary>Every field is checked before anything is written; the error names the field.</summary>
    public static void Validate(PolicyFields f)
    {
        CidrList.Parse(f.AllowedCidrs);
        TimeWindows.Parse(f.TimeWindows);
        TimeWindows.Zone(f.TimeZone);
        foreach (var (name, value) in new[] { ("requests_per_minute", (long?)f.RequestsPerMinute), ("tokens_per_minute", f.TokensPerMinute), ("daily_token_budget", f.DailyTokenBudget), ("monthly_token_budget", f.MonthlyTokenBudget) })
        {
            if (value < 0)
            {
                throw new GatewayException(400, "invalid_request_error", "invalid_limit", $"{name} must be 0 or more (leave it out for no limit).", name);
            }
        }

        foreach (var (name, value) in new[] { ("prompt_pii_action", f.PromptPiiAction), ("audit_pii_action", f.AuditPiiAction) })
        {
            if (!string.IsNullOrWhiteSpace(value) && !Pii.PiiActions.IsValid(value))
            {
                throw new GatewayException(400, "invalid_request_error", "invalid_pii_action", $"{name} must be allow, mask, tag or block, not '{value}'.", name);
            }
        }

        if (f.AuditPiiAction == Pii.PiiActions.Block)
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_pii_action", "audit_pii_action cannot be block: the audit record is written either way (use mask or tag).", "audit_pii_action");
        }
    }

    /// <summary>Role name, user name or id, key id or prefix (with or without <c>sk-enclave-</c>) to the stored subject id.</summary>
    private static async Task<string> ResolveAsync(GatewayDbContext db, string scope, string subject, CancellationToken ct)
    {
        if (!PolicyScopes.IsValid(scope))
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_scope", $"Policy scope must be role, user or key, not '{scope}'.", "scope");
        }

        string? id = scope switch
        {
            PolicyScopes.Role => await db.Roles.Where(r => r.Name == subject).Select(r => r.Name).FirstOrDefaultAsync(ct),
            PolicyScopes.User => await db.Users.Where(u => u.Name == subject || u.Id == subject).Select(u => u.Id).FirstOrDefaultAsync(ct),
            _ => await FindKeyAsync(db, subject, ct),
        };
        return id ?? throw new GatewayException(404, "invalid_request_error", "not_found", $"No {scope} '{subject}'.", "subject");
    }

    private static Task<string?> FindKeyAsync(GatewayDbContext db, string subject, CancellationToken ct)
    {
        var s = subject.Trim();
        if (s.StartsWith(ApiKeySecret.Scheme, StringComparison.Ordinal))
        {
            s = s[ApiKeySecret.Scheme.Length..].TrimEnd('.');
            s = s.Length > ApiKeySecret.PrefixLength ? s[..ApiKeySecret.PrefixLength] : s;
        }

        return db.ApiKeys.Where(k => k.Id == s || k.Prefix == s).Select(k => k.Id).FirstOrDefaultAsync(ct);
    }

    private static string? Blank(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();
}
