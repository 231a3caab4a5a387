using System.Text.Json.Serialization;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Security;
using Enclave.Gateway.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Enclave.Gateway.Hosting;

public sealed record UserCreateBody(string Name, string? DisplayName = null, string? AllowedCidrs = null);

public sealed record KeyCreateBody(
    string Role,
    string? Name = null,
    string? User = null,
    DateTimeOffset? ExpiresAt = null,
    string? AllowedCidrs = null,
    string? AllowedModels = null,
    int? RequestsPerMinute = null,
    int? TokensPerMinute = null,
    string? PromptPiiAction = null);

/// <summary>A policy as sent to <c>PUT /admin/policies/{scope}/{subject}</c>; fields left out are cleared.</summary>
public sealed record PolicyBody(
    [property: JsonPropertyName("allowed_cidrs")] string? AllowedCidrs = null,
    [property: JsonPropertyName("allowed_models")] string? AllowedModels = null,
    [property: JsonPropertyName("requests_per_minute")] int? RequestsPerMinute = null,
    [property: JsonPropertyName("tokens_per_minute")] int? TokensPerMinute = null,
    [property: JsonPropertyName("daily_token_budget")] long? DailyTokenBudget = null,
    [property: JsonPropertyName("monthly_token_budget")] long? MonthlyTokenBudget = null,
    [property: JsonPropertyName("time_windows")] string? TimeWindows = null,
    [property: JsonPropertyName("time_zone")] string? TimeZone = null,
    [property: JsonPropertyName("prompt_pii_action")] string? PromptPiiAction = null,
    [property: JsonPropertyName("audit_pii_action")] string? AuditPiiAction = null,
    [property: JsonPropertyName("blocked_phrases")] string[]? BlockedPhrases = null)
{
    public PolicyFields ToFields() => new(AllowedCidrs, AllowedModels, RequestsPerMinute, TokensPerMinute, DailyTokenBudget, MonthlyTokenBudget,
        TimeWindows, TimeZone, PromptPiiAction, AuditPiiAction, BlockedPhrases);
}

public sealed record RoleCreateBody(string Name, string[] Permissions, string? Description = null, string? AllowedCidrs = null);

/// <summary>The admin REST API: users, keys, roles and audit, each endpoint with its permission.</summary>
public static class AdminEndpoints
{
    public static RouteGroupBuilder MapEnclaveGatewayAdmin(this IEndpointRouteBuilder routes, string prefix = "/admin")
    {
        var g = routes.MapGroup(prefix);

        g.MapGet("/users", async (UserService users, CancellationToken ct) =>
            Results.Json(new { data = (await users.ListAsync(ct)).Select(UserView) }))
            .RequirePermission(Permissions.UsersManage);
        g.MapPost("/users", async (UserCreateBody body, UserService users, CancellationToken ct) =>
            Results.Json(UserView(await users.AddAsync(body.Name, body.DisplayName, body.AllowedCidrs, ct)), statusCode: 201))
            .RequirePermission(Permissions.UsersManage);
        g.MapPost("/users/{name}/disable", async (string name, UserService users, CancellationToken ct) =>
            await users.SetStatusAsync(name, UserStatus.Disabled, ct) ? Results.NoContent() : NotFound("user", name))
            .RequirePermission(Permissions.UsersManage);
        g.MapPost("/users/{name}/enable", async (string name, UserService users, CancellationToken ct) =>
            await users.SetStatusAsync(name, UserStatus.Active, ct) ? Results.NoContent() : NotFound("user", name))
            .RequirePermission(Permissions.UsersManage);

        g.MapGet("/keys", async (KeyService keys, CancellationToken ct) =>
            Results.Json(new { data = (await keys.ListAsync(ct)).Select(KeyView) }))
            .RequirePermission(Permissions.KeysManage);
        g.MapPost("/keys", async (KeyCreateBody b, KeyService keys, CancellationToken ct) =>
        {
            var created = await keys.CreateAsync(new KeyCreateRequest(b.Role, b.Name, b.User, b.ExpiresAt, b.AllowedCidrs, b.AllowedModels, b.RequestsPerMinute, b.TokensPerMinute, b.PromptPiiAction), ct);
            return Results.Json(new { key = KeyView(created.Key), secret = created.Secret }, statusCode: 201);
        }).RequirePermission(Permissions.KeysManage);
        g.MapDelete("/keys/{id}", async (string id, KeyService keys, CancellationToken ct) =>
            await keys.RevokeAsync(id, ct) ? Results.NoContent() : NotFound("key", id))
            .RequirePermission(Permissions.KeysManage);

        g.MapGet("/roles", async (GatewayStore store, CancellationToken ct) =>
            Results.Json(new { data = (await RoleCatalog.ListAsync(store, ct)).Select(RoleView) }))
            .RequirePermission(Permissions.RolesManage);
        g.MapPost("/roles", async (RoleCreateBody b, GatewayStore store, KeyService keys, CancellationToken ct) =>
        {
            var role = await RoleCatalog.CreateAsync(store, b.Name, b.Permissions, b.Description, b.AllowedCidrs, ct);
            keys.InvalidateCache();
            return Results.Json(RoleView(role), statusCode: 201);
        }).RequirePermission(Permissions.RolesManage);

        g.MapGet("/policies", async (PolicyService policies, CancellationToken ct) =>
            Results.Json(new { data = (await policies.ListAsync(ct)).Select(PolicyView) }))
            .RequirePermission(Permissions.PoliciesManage);
        g.MapGet("/policies/{scope}/{subject}", async (string scope, string subject, PolicyService policies, CancellationToken ct) =>
            await policies.GetAsync(scope, subject, ct) is { } p ? Results.Json(PolicyView(p)) : NotFound("policy", $"{scope}/{subject}"))
            .RequirePermission(Permissions.PoliciesManage);
        g.MapPut("/policies/{scope}/{subject}", async (string scope, string subject, PolicyBody body, PolicyService policies, CancellationToken ct) =>
            Results.Json(PolicyView(await policies.SetAsync(scope, subject, body.ToFields(), ct))))
            .RequirePermission(Permissions.PoliciesManage);
        g.MapDelete("/policies/{scope}/{subject}", async (string scope, string subject, PolicyService policies, CancellationToken ct) =>
            await policies.RemoveAsync(scope, subject, ct) ? Results.NoContent() : NotFound("policy", $"{scope}/{subject}"))
            .RequirePermission(Permissions.PoliciesManage);

        g.MapGet("/audit", async (AuditLog audit, DateTimeOffset? since, DateTimeOffset? until, string? principal, string? model, int? status, string? text, int? limit, CancellationToken ct) =>
            Results.Json(new { data = (await audit.SearchAsync(new AuditQuery(since, until, principal, model, status, text, limit ?? 100), ct)).Select(AuditView) }))
            .RequirePermission(Permissions.AuditRead);
        g.MapGet("/audit/verify", async (AuditLog audit, CancellationToken ct) =>
        {
            var r = await audit.VerifyChainAsync(ct);
            return Results.Json(new { intact = r.Intact, records = r.RecordCount, first_bad_sequence = r.FirstBadSequence, message = r.Message });
        }).RequirePermission(Permissions.AuditRead);

        return g;
    }

    private static IResult NotFound(string what, string id) =>
        Results.Json(new { error = new { message = $"No {what} '{id}'.", type = "invalid_request_error", param = (string?)null, code = "not_found" } }, statusCode: 404);

    internal static object UserView(UserEntity u) => new
    {
        id = u.Id,
        name = u.Name,
        display_name = u.DisplayName,
        status = u.Status,
        allowed_cidrs = u.AllowedCidrs,
        created_at = DateTimeOffset.FromUnixTimeMilliseconds(u.CreatedAtMs),
    };

    internal static object KeyView(ApiKeyEntity k) => new
    {
        id = k.Id,
        prefix = ApiKeySecret.Scheme + k.Prefix,
        name = k.Name,
        user_id = k.UserId,
        role = k.Role,
        created_at = DateTimeOffset.FromUnixTimeMilliseconds(k.CreatedAtMs),
        expires_at = k.ExpiresAtMs is { } e ? DateTimeOffset.FromUnixTimeMilliseconds(e) : (DateTimeOffset?)null,
        revoked_at = k.RevokedAtMs is { } r ? DateTimeOffset.FromUnixTimeMilliseconds(r) : (DateTimeOffset?)null,
        last_used_at = k.LastUsedAtMs is { } l ? DateTimeOffset.FromUnixTimeMilliseconds(l) : (DateTimeOffset?)null,
        allowed_cidrs = k.AllowedCidrs,
        allowed_models = k.AllowedModels,
        requests_per_minute = k.RequestsPerMinute,
        tokens_per_minute = k.TokensPerMinute,
        prompt_pii_action = k.PromptPiiAction,
    };

    internal static object AuditView(AuditRecordEntity r) => new
    {
        sequence = r.Sequence,
        timestamp = DateTimeOffset.FromUnixTimeMilliseconds(r.TimestampMs),
        request_id = r.RequestId,
        principal = r.Principal,
        role = r.Role,
        source_ip = r.SourceIp,
        method = r.Method,
        endpoint = r.Endpoint,
        model = r.Model,
        status = r.Status,
        latency_ms = r.LatencyMs,
        prompt_tokens = r.PromptTokens,
        completion_tokens = r.CompletionTokens,
        details = r.Details,
        algorithm = r.Algorithm,
        prev_hash = r.PrevHash,
        hash = r.Hash,
    };

    internal static object PolicyView(PolicyEntity p) => new
    {
        scope = p.Scope,
        subject = p.Subject,
        allowed_cidrs = p.AllowedCidrs,
        allowed_models = p.AllowedModels,
        requests_per_minute = p.RequestsPerMinute,
        tokens_per_minute = p.TokensPerMinute,
        daily_token_budget = p.DailyTokenBudget,
        monthly_token_budget = p.MonthlyTokenBudget,
        time_windows = p.TimeWindows,
        time_zone = p.TimeZone,
        prompt_pii_action = p.PromptPiiAction,
        audit_pii_action = p.AuditPiiAction,
        blocked_phrases = PolicyService.FieldsOf(p).BlockedPhrases,
        updated_at = DateTimeOffset.FromUnixTimeMilliseconds(p.UpdatedAtMs),
    };

    internal static object RoleView(RoleEntity r) => new
    {
        name = r.Name,
        description = r.Description,
        permissions = r.Permissions.Split(' ', StringSplitOptions.RemoveEmptyEntries),
        built_in = r.BuiltIn,
        allowed_cidrs = r.AllowedCidrs,
    };
}
