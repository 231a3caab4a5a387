using System.Diagnostics;
using System.Net;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Globalization;
using System.Runtime.CompilerServices;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Limits;
using Enclave.Gateway.Pii;
using Enclave.Gateway.Security;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Enclave.Gateway.Hosting;

/// <summary>
/// The gateway's request pipeline: client address, brute-force lock-out, key authentication,
/// IP conditions, endpoint permission, allowed models, prompt PII policy and content filter,
/// rate limits, then the endpoint, then one audit record committed before the response completes.
/// </summary>
public sealed class GatewayMiddleware(
    RequestDelegate next,
    IOptions<GatewayOptions> options,
    KeyService keys,
    FailedAuthLimiter failedAuth,
    GatewayLimiter limiter,
    AuditLog audit,
    PiiDetector pii,
    ContentFilter contentFilter,
    TimeProvider time,
    ILogger<GatewayMiddleware> logger)
{
    public const string PrincipalItem = "enclave.gateway.principal";

    /// <summary>The trace source of the <c>gateway</c> span (authentication through audit) and its <c>gateway.audit</c> child.</summary>
    public const string ActivitySourceName = "Enclave.Gateway";

    private static readonly ActivitySource Tracing = new(ActivitySourceName);
    private readonly GatewayOptions _opts = options.Value;
    private readonly ClientAddress _clientAddress = new(CidrList.Parse(options.Value.TrustedProxies));

    /// <summary>Who <c>--no-auth</c> calls are recorded as in the audit trail.</summary>
    public const string AnonymousPrincipal = "anonymous";

    private static readonly GatewayPrincipal NoAuthPrincipal = new(
        AnonymousPrincipal, AnonymousPrincipal, AnonymousPrincipal, null, AnonymousPrincipal, AnonymousPrincipal,
        Permissions.All.ToHashSet(StringComparer.Ordinal), CidrList.Any, CidrList.Any, CidrList.Any,
        new HashSet<string>(StringComparer.Ordinal), null, null, null, null);

    public async Task InvokeAsync(HttpContext ctx)
    {
        var endpoint = ctx.GetEndpoint();
        var required = endpoint?.Metadata.GetMetadata<RequirePermissionAttribute>();
        var anonymous = endpoint?.Metadata.GetMetadata<GatewayAnonymousAttribute>() is not null;
        var underPrefix = _opts.ProtectedPrefixes.Any(p => ctx.Request.Path.StartsWithSegments(p, StringComparison.OrdinalIgnoreCase));
        if (anonymous || (required is null && !underPrefix))
        {
            await next(ctx);
            return;
        }

        using var activity = Tracing.StartActivity("gateway");
        var started = Stopwatch.GetTimestamp();
        var requestId = Guid.NewGuid().ToString("N");
        activity?.SetTag("enclave.gateway.request_id", requestId);
        ctx.Response.Headers["x-request-id"] = requestId;
        var client = _clientAddress.Resolve(ctx.Connection.RemoteIpAddress, ctx.Request.Headers["X-Forwarded-For"].ToString());
        var clientText = client?.ToString() ?? "unknown";
        GatewayPrincipal? principal = null;
        string? model = null;
        string? requestText = null;
        var decisions = new List<string>();
        CaptureStream? capture = null;
        TokenReservation? reservation = null;
        var originalBody = ctx.Response.Body;

        try
        {
            principal = await AuthorizeAsync(ctx, client, clientText, endpoint is not null, required?.Permission);
            ctx.Items[PrincipalItem] = principal;
            ctx.User = new ClaimsPrincipal(new ClaimsIdentity(
            [
                new Claim(ClaimTypes.Name, principal.Display),
                new Claim(ClaimTypes.Role, principal.Role),
                new Claim("enclave:key", principal.KeyPrefix),
            ], "enclave-key"));

            long? maxTokens = null;
            if (HasJsonBody(ctx.Request))
            {
                (requestText, model, maxTokens) = await ReadBodyAsync(ctx);
                if (model is not null
                    && ((principal.AllowedModels.Count > 0 && !principal.AllowedModels.Contains(model)) || !principal.Policy.AllowsModel(model)))
                {
                    throw new GatewayException(403, "permission_error", "model_not_allowed", $"This key may not use model '{model}'.", "model");
                }

                if (requestText is not null)
                {
                    requestText = ApplyPromptPolicies(ctx, principal, requestText, decisions);
                }
            }

            reservation = await AdmitAsync(ctx, principal, requestText, maxTokens, decisions);
            var filter = FilterFor(principal);
            capture = new CaptureStream(originalBody, _opts.AuditBodyLimitBytes, filter.IsEmpty ? null : filter);
            ctx.Response.Body = capture;
            await next(ctx);
            if (!filter.IsEmpty && !ctx.Response.HasStarted)
            {
                // The filter may shorten a held body.
                ctx.Response.ContentLength = null;
            }

            await capture.CompleteAsync(ctx.RequestAborted);
            if (capture.Blocked is not null)
            {
                decisions.Add("response_filtered:content_filter");
                logger.LogInformation("Response {RequestId} cut by the content filter", requestId);
            }
        }
        catch (GatewayException ex)
        {
            ctx.Response.Body = originalBody;
            await OpenAiError.WriteAsync(ctx, ex.Status, ex.Type, ex.Code, ex.Message, ex.Param);
            decisions.Add("denied:" + ex.Code);
        }
        finally
        {
            ctx.Response.Body = originalBody;
        }

        var status = ctx.Response.StatusCode;
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("enclave.principal", principal?.Display);
            activity.SetTag("enclave.role", principal?.Role);
            activity.SetTag("enclave.permission", required?.Permission);
            activity.SetTag("gen_ai.request.model", model);
            activity.SetTag("http.response.status_code", status);
            activity.SetTag("enclave.gateway.decisions", decisions.ToArray());
            if (status >= 400)
            {
                activity.SetStatus(ActivityStatusCode.Error, decisions.LastOrDefault());
            }
        }

        var (promptTokens, completionTokens) = capture is null ? (null, null) : ReadUsage(capture.Text);
        if (reservation is not null)
        {
            // Settled even when the call failed: a failure costs nothing and releases what it held.
            // A success that reports no usage (a stream without include_usage) is charged the
            // estimate, so leaving usage out cannot get round a budget.
            var used = promptTokens is null && completionTokens is null
                ? (status < 400 ? reservation.Tokens : 0)
                : (promptTokens ?? 0) + (completionTokens ?? 0);
            try
            {
                await limiter.SettleAsync(reservation, used, CancellationToken.None);
            }
            catch (Exception e) when (e is StackExchange.Redis.RedisException or TimeoutException)
            {
                // The reservation then simply ages out with its window.
                logger.LogWarning(e, "Could not settle the token reservation of {RequestId}", requestId);
            }
        }

        var details = new JsonObject
        {
            ["query"] = ctx.Request.QueryString.HasValue ? ctx.Request.QueryString.Value : null,
            ["request"] = AsNode(Redact(requestText, principal)),
            ["response"] = AsNode(Redact(capture?.Text, principal)),
            ["decisions"] = new JsonArray([.. decisions.Select(d => (JsonNode?)JsonValue.Create(d))]),
        };
        using var auditActivity = Tracing.StartActivity("gateway.audit");
        await audit.AppendAsync(new AuditEntry
        {
            RequestId = requestId,
            Principal = principal?.Display,
            Role = principal?.Role,
            SourceIp = clientText,
            Method = ctx.Request.Method,
            Endpoint = ctx.Request.Path.Value ?? "",
            Model = model,
            Status = status,
            LatencyMs = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds,
            PromptTokens = promptTokens,
            CompletionTokens = completionTokens,
            Details = details.ToJsonString(DetailsJson),
        });

        if (principal is not null && !ReferenceEquals(principal, NoAuthPrincipal))
        {
            await keys.TouchAsync(principal.KeyId);
        }
    }

    private static readonly JsonSerializerOptions DetailsJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Keeps JSON bodies structured in the record (searchable as text); anything else as a string.</summary>
    private static JsonNode? AsNode(string? text)
    {
        if (text is null)
        {
            return null;
        }

        try
        {
            return JsonNode.Parse(text);
        }
        catch (JsonException)
        {
            return JsonValue.Create(text);
        }
    }

    private string? Redact(string? text, GatewayPrincipal? principal)
    {
        var action = principal?.Policy.AuditPiiAction ?? _opts.AuditPiiAction;
        return text is null || action == PiiActions.Allow ? text : pii.Redact(text, action == PiiActions.Block ? PiiActions.Tag : action);
    }

    /// <summary>
    /// Requests and tokens per minute and token budgets for the key and for its user. Tokens are
    /// reserved from an estimate (a quarter of the body's characters plus <c>max_tokens</c> or the
    /// configured default) and settled to the response's <c>usage</c> afterwards.
    /// </summary>
    private async Task<TokenReservation?> AdmitAsync(HttpContext ctx, GatewayPrincipal principal, string? requestText, long? maxTokens, List<string> decisions)
    {
        var keyLimits = principal.Policy.KeyLimits;
        var userLimits = principal.UserId is null ? LimitPolicy.None : principal.Policy.UserLimits;
        if (keyLimits.IsEmpty && userLimits.IsEmpty)
        {
            return null;
        }

        List<LimitSubject> subjects = [];
        if (!keyLimits.IsEmpty)
        {
            subjects.Add(new LimitSubject(Store.PolicyScopes.Key, principal.KeyId, keyLimits));
        }

        if (!userLimits.IsEmpty)
        {
            subjects.Add(new LimitSubject(Store.PolicyScopes.User, principal.UserId!, userLimits));
        }

        var reserve = keyLimits.CountsTokens || userLimits.CountsTokens
            ? ((requestText?.Length ?? 0) / 4) + (maxTokens ?? _opts.ReserveCompletionTokens)
            : 0;
        Admission d;
        try
        {
            d = await limiter.AdmitAsync(subjects, reserve, ctx.RequestAborted);
        }
        catch (Exception e) when (e is StackExchange.Redis.RedisException or TimeoutException)
        {
            // Fail closed for limited keys: without the shared counters the limits cannot be kept.
            logger.LogError(e, "Rate limiter unavailable");
            decisions.Add("limiter_unavailable");
            throw new GatewayException(503, "server_error", "limiter_unavailable", "The rate limiter is unavailable; retry shortly.");
        }

        foreach (var (name, value) in d.Headers)
        {
            ctx.Response.Headers[name] = value;
        }

        if (d.Allowed)
        {
            return d.Reservation;
        }

        ctx.Response.Headers.RetryAfter = d.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        decisions.Add($"rate_limited:{d.DeniedSubject}:{d.DeniedKind}");
        if (d.IsBudget)
        {
            var period = d.DeniedKind == LimitKinds.DailyTokens ? "daily" : "monthly";
            var resets = NodaTime.Instant.FromDateTimeOffset(d.ResetsAt!.Value).InZone(limiter.Zone).LocalDateTime.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture);
            throw new GatewayException(429, "insufficient_quota", "insufficient_quota",
                $"The {period} token budget of {d.DeniedLimit} for this {d.DeniedSubject} is used up; it resets at {resets} ({limiter.Zone.Id}). Retry after {d.RetryAfterSeconds}s.");
        }

        var what = d.DeniedKind == LimitKinds.Requests ? "requests" : "tokens";
        throw new GatewayException(429, "rate_limit_error", "rate_limit_exceeded",
            $"Rate limit reached for {what} per minute on this {d.DeniedSubject} (limit {d.DeniedLimit}). Retry after {d.RetryAfterSeconds}s.");
    }

    private readonly ConditionalWeakTable<EffectivePolicy, ContentFilter> _filters = [];

    /// <summary>The global content filter, widened by the phrases of the caller's policies.</summary>
    private ContentFilter FilterFor(GatewayPrincipal principal) =>
        principal.Policy.BlockedPhrases.Count == 0
            ? contentFilter
            : _filters.GetValue(principal.Policy, p => new ContentFilter([.. _opts.BlockedPhrases, .. p.BlockedPhrases]));

    private async Task<GatewayPrincipal> AuthorizeAsync(HttpContext ctx, IPAddress? client, string clientText, bool endpointMatched, string? permission)
    {
        if (_opts.NoAuth)
        {
            return NoAuthPrincipal;
        }

        if (failedAuth.RetryAfterSeconds(clientText) is { } wait)
        {
            ctx.Response.Headers.RetryAfter = wait.ToString(System.Globalization.CultureInfo.InvariantCulture);
            throw new GatewayException(429, "rate_limit_error", "too_many_failed_auth", "Too many failed authentication attempts from this address.");
        }

        var secret = ReadSecret(ctx.Request);
        if (secret is null)
        {
            failedAuth.RecordFailure(clientText);
            throw new GatewayException(401, "invalid_request_error", "missing_api_key", "An API key is required (Authorization: Bearer sk-enclave-...).");
        }

        var principal = await keys.AuthenticateAsync(secret, ctx.RequestAborted);
        if (principal is null)
        {
            failedAuth.RecordFailure(clientText);
            throw new GatewayException(401, "invalid_request_error", "invalid_api_key", "Invalid, expired or revoked API key.");
        }

        if (!principal.KeyCidrs.Allows(client) || !principal.UserCidrs.Allows(client) || !principal.RoleCidrs.Allows(client)
            || !principal.Policy.Cidrs.All(c => c.Allows(client)))
        {
            throw new GatewayException(403, "permission_error", "ip_not_allowed", $"Requests from {clientText} are not allowed for this key.");
        }

        if (!endpointMatched)
        {
            // Authenticated callers get the router's 404; anonymous ones never learn which paths exist.
            return principal;
        }

        if (permission is null)
        {
            throw new GatewayException(403, "permission_error", "endpoint_not_classified", "This endpoint declares no permission and is refused.");
        }

        if (!principal.Has(permission))
        {
            throw new GatewayException(403, "permission_error", "permission_denied", $"Role '{principal.Role}' lacks permission '{permission}'.");
        }

        if (principal.Policy.OutsideWindow(NodaTime.Instant.FromDateTimeOffset(time.GetUtcNow())) is { } w)
        {
            var local = NodaTime.Instant.FromDateTimeOffset(time.GetUtcNow()).InZone(w.Zone).LocalDateTime;
            throw new GatewayException(403, "permission_error", "outside_time_window",
                $"This {w.Scope} may only be used {w.Windows.Text} ({w.Zone.Id}); it is now {local.ToString("ddd HH:mm", CultureInfo.InvariantCulture)} there.");
        }

        return principal;
    }

    private static string? ReadSecret(HttpRequest req)
    {
        var auth = req.Headers.Authorization.ToString();
        if (auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return auth[7..].Trim();
        }

        var x = req.Headers["x-api-key"].ToString();
        return string.IsNullOrWhiteSpace(x) ? null : x.Trim();
    }

    private static bool HasJsonBody(HttpRequest req) =>
        !HttpMethods.IsGet(req.Method) && !HttpMethods.IsHead(req.Method)
        && (req.ContentType?.Contains("json", StringComparison.OrdinalIgnoreCase) ?? false);

    private const int MaxInspectedBody = 8 * 1024 * 1024;

    private static async Task<(string? Text, string? Model, long? MaxTokens)> ReadBodyAsync(HttpContext ctx)
    {
        ctx.Request.EnableBuffering();
        using var ms = new MemoryStream();
        try
        {
            await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted);
        }
        catch (BadHttpRequestException e)
        {
            // Kestrel's own body limit: answer in the OpenAI shape (and audit it) rather than drop the error.
            throw new GatewayException(e.StatusCode, "invalid_request_error", e.StatusCode == 413 ? "request_too_large" : "invalid_request_body",
                e.StatusCode == 413 ? "The request body is larger than the server accepts." : "The request body could not be read: " + e.Message);
        }

        ctx.Request.Body.Position = 0;
        if (ms.Length > MaxInspectedBody)
        {
            throw new GatewayException(413, "invalid_request_error", "request_too_large", "Request body too large.");
        }

        var text = Encoding.UTF8.GetString(ms.GetBuffer(), 0, (int)ms.Length);
        string? model = null;
        long? maxTokens = null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                if (root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String)
                {
                    model = m.GetString();
                }

                foreach (var name in (ReadOnlySpan<string>)["max_completion_tokens", "max_tokens"])
                {
                    if (maxTokens is null && root.TryGetProperty(name, out var mt) && mt.TryGetInt64(out var n) && n > 0)
                    {
                        maxTokens = n;
                    }
                }
            }
        }
        catch (JsonException)
        {
            // Let the endpoint report malformed JSON.
        }

        return (text, model, maxTokens);
    }

    private string ApplyPromptPolicies(HttpContext ctx, GatewayPrincipal principal, string body, List<string> decisions)
    {
        if (FilterFor(principal).FindIn(body) is not null)
        {
            decisions.Add("prompt_blocked:content_filter");
            throw new GatewayException(400, "invalid_request_error", "content_filter", "The request contains blocked content.", "messages");
        }

        var action = principal.Policy.PromptPiiAction ?? _opts.PromptPiiAction;
        if (action == PiiActions.Allow)
        {
            return body;
        }

        var matches = pii.Detect(body);
        if (matches.Count == 0)
        {
            return body;
        }

        var types = string.Join(',', matches.Select(m => m.Type).Distinct());
        if (action == PiiActions.Block)
        {
            decisions.Add("prompt_blocked:pii:" + types);
            throw new GatewayException(400, "invalid_request_error", "content_filter", $"The request contains personal data ({types}) that this key may not send.", "messages");
        }

        var redacted = PiiDetector.Redact(body, action, matches);
        decisions.Add($"prompt_{action}:pii:{types}");
        var bytes = Encoding.UTF8.GetBytes(redacted);
        ctx.Request.Body = new MemoryStream(bytes);
        ctx.Request.ContentLength = bytes.Length;
        return redacted;
    }

    /// <summary>The index of the brace closing the object opened at <paramref name="open"/>; usage objects nest (prompt_tokens_details).</summary>
    private static int MatchingBrace(string text, int open)
    {
        var depth = 0;
        var inString = false;
        for (var i = open; i < text.Length; i++)
        {
            var c = text[i];
            if (inString)
            {
                if (c == '\\')
                {
                    i++;
                }
                else if (c == '"')
                {
                    inString = false;
                }
            }
            else if (c == '"')
            {
                inString = true;
            }
            else if (c == '{')
            {
                depth++;
            }
            else if (c == '}' && --depth == 0)
            {
                return i;
            }
        }

        return -1;
    }

    internal static (int? Prompt, int? Completion) ReadUsage(string? body)
    {
        if (string.IsNullOrEmpty(body))
        {
            return (null, null);
        }

        var idx = body.LastIndexOf("\"usage\"", StringComparison.Ordinal);
        if (idx < 0)
        {
            return (null, null);
        }

        var start = body.IndexOf('{', idx);
        var end = start < 0 ? -1 : MatchingBrace(body, start);
        if (start < 0 || end < 0)
        {
            return (null, null);
        }

        try
        {
            using var doc = JsonDocument.Parse(body.AsMemory(start, end - start + 1));
            int? Get(string name) => doc.RootElement.TryGetProperty(name, out var v) && v.TryGetInt32(out var n) ? n : null;
            return (Get("prompt_tokens"), Get("completion_tokens"));
        }
        catch (JsonException)
        {
            return (null, null);
        }
    }
}
