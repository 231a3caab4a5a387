using System.Diagnostics;
using System.Net;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Gateway.Audit;
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
    RequestRateLimiter rateLimiter,
    AuditLog audit,
    PiiDetector pii,
    ContentFilter contentFilter,
    ILogger<GatewayMiddleware> logger)
{
    public const string PrincipalItem = "enclave.gateway.principal";

    /// <summary>The trace source of the <c>gateway</c> span (authentication through audit) and its <c>gateway.audit</c> child.</summary>
    public const string ActivitySourceName = "Enclave.Gateway";

    private static readonly ActivitySource Tracing = new(ActivitySourceName);
    private readonly GatewayOptions _opts = options.Value;
    private readonly ClientAddress _clientAddress = new(CidrList.Parse(options.Value.TrustedProxies));

    private static readonly GatewayPrincipal NoAuthPrincipal = new(
        "no-auth", "no-auth", "no-auth", null, "local", BuiltInRoles.Admin,
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

            if (HasJsonBody(ctx.Request))
            {
                (requestText, model) = await ReadBodyAsync(ctx);
                if (model is not null && principal.AllowedModels.Count > 0 && !principal.AllowedModels.Contains(model))
                {
                    throw new GatewayException(403, "permission_error", "model_not_allowed", $"This key may not use model '{model}'.", "model");
                }

                if (requestText is not null)
                {
                    requestText = ApplyPromptPolicies(ctx, principal, requestText, decisions);
                }
            }

            if (principal.RequestsPerMinute is not null || principal.TokensPerMinute is not null)
            {
                var d = rateLimiter.TryAdmit(principal.KeyId, principal.RequestsPerMinute, principal.TokensPerMinute);
                ctx.Response.Headers[$"x-ratelimit-limit-{d.Kind}"] = d.Limit.ToString(System.Globalization.CultureInfo.InvariantCulture);
                ctx.Response.Headers[$"x-ratelimit-remaining-{d.Kind}"] = d.Remaining.ToString(System.Globalization.CultureInfo.InvariantCulture);
                ctx.Response.Headers[$"x-ratelimit-reset-{d.Kind}"] = d.ResetSeconds + "s";
                if (!d.Allowed)
                {
                    ctx.Response.Headers.RetryAfter = d.ResetSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    decisions.Add("rate_limited:" + d.Kind);
                    throw new GatewayException(429, "rate_limit_error", "rate_limit_exceeded", $"Rate limit reached for {d.Kind} per minute. Retry after {d.ResetSeconds}s.");
                }
            }

            capture = new CaptureStream(originalBody, _opts.AuditBodyLimitBytes, contentFilter.IsEmpty ? null : contentFilter);
            ctx.Response.Body = capture;
            await next(ctx);
            if (!contentFilter.IsEmpty && !ctx.Response.HasStarted)
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
        if (principal is not null && (promptTokens ?? 0) + (completionTokens ?? 0) > 0)
        {
            rateLimiter.ChargeTokens(principal.KeyId, (promptTokens ?? 0) + (completionTokens ?? 0));
        }

        var details = new JsonObject
        {
            ["query"] = ctx.Request.QueryString.HasValue ? ctx.Request.QueryString.Value : null,
            ["request"] = AsNode(Redact(requestText)),
            ["response"] = AsNode(Redact(capture?.Text)),
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

    private string? Redact(string? text) =>
        text is null || _opts.AuditPiiAction == PiiActions.Allow ? text : pii.Redact(text, _opts.AuditPiiAction == PiiActions.Block ? PiiActions.Tag : _opts.AuditPiiAction);

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

        if (!principal.KeyCidrs.Allows(client) || !principal.UserCidrs.Allows(client) || !principal.RoleCidrs.Allows(client))
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

    private static async Task<(string? Text, string? Model)> ReadBodyAsync(HttpContext ctx)
    {
        ctx.Request.EnableBuffering();
        using var ms = new MemoryStream();
        await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted);
        ctx.Request.Body.Position = 0;
        if (ms.Length > MaxInspectedBody)
        {
            throw new GatewayException(413, "invalid_request_error", "request_too_large", "Request body too large.");
        }

        var text = Encoding.UTF8.GetString(ms.GetBuffer(), 0, (int)ms.Length);
        string? model = null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String)
            {
                model = m.GetString();
            }
        }
        catch (JsonException)
        {
            // Let the endpoint report malformed JSON.
        }

        return (text, model);
    }

    private string ApplyPromptPolicies(HttpContext ctx, GatewayPrincipal principal, string body, List<string> decisions)
    {
        if (contentFilter.FindIn(body) is not null)
        {
            decisions.Add("prompt_blocked:content_filter");
            throw new GatewayException(400, "invalid_request_error", "content_filter", "The request contains blocked content.", "messages");
        }

        var action = principal.PromptPiiAction ?? _opts.PromptPiiAction;
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
