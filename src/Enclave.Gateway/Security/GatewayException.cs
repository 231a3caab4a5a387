namespace Enclave.Gateway.Security;

/// <summary>A request failure that maps to an HTTP status and an OpenAI-shaped error body.</summary>
public sealed class GatewayException(int status, string type, string code, string message, string? param = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string Code { get; } = code;
    public string? Param { get; } = param;
}
