using System.Text.Json.Nodes;

namespace Enclave.Server.Api;

/// <summary>
/// An error answered in the OpenAI shape <c>{"error":{"message","type","param","code"}}</c> with an HTTP status.
/// Thrown anywhere while handling a request; the endpoint turns it into the response.
/// </summary>
public sealed class ApiException(int status, string message, string? param = null, string? code = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    /// <summary>OpenAI's error type for the status: invalid_request_error, authentication_error, not_found_error...</summary>
    public string Type { get; } = type ?? status switch
    {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "invalid_request_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    /// <summary>Seconds a client should wait before retrying (429 and 503).</summary>
    public int? RetryAfterSeconds { get; init; }

    public static ApiException BadParam(string param, string message) => new(400, message, param);

    public JsonObject ToJson() => Body(Message, Type, Param, Code);

    public static JsonObject Body(string message, string type, string? param, string? code) => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = message,
            ["type"] = type,
            ["param"] = param,
            ["code"] = code,
        },
    };
}
