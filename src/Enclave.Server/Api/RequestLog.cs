namespace Enclave.Server.Api;

/// <summary>What a handler learned about a request, for the one log line written when it ends (no prompt text).</summary>
public sealed class RequestLog
{
    public string? RequestId { get; set; }

    public string? Model { get; set; }

    public int PromptTokens { get; set; }

    public int CompletionTokens { get; set; }

    public int CachedTokens { get; set; }

    public double? TimeToFirstTokenMs { get; set; }

    public string? FinishReason { get; set; }

    public bool Stream { get; set; }

    public string? Error { get; set; }

    public static RequestLog For(Microsoft.AspNetCore.Http.HttpContext context)
    {
        if (context.Items.TryGetValue(typeof(RequestLog), out var existing) && existing is RequestLog log)
        {
            return log;
        }

        log = new RequestLog();
        context.Items[typeof(RequestLog)] = log;
        return log;
    }
}
