using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Enclave.Gateway.Hosting;

/// <summary>Writes errors in the OpenAI shape: <c>{"error":{"message","type","param","code"}}</c>.</summary>
public static class OpenAiError
{
    public static async Task WriteAsync(HttpContext ctx, int status, string type, string code, string message, string? param = null)
    {
        if (ctx.Response.HasStarted)
        {
            return;
        }

        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        var body = new { error = new { message, type, param, code } };
        await ctx.Response.WriteAsync(JsonSerializer.Serialize(body), ctx.RequestAborted);
    }
}
