using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Api;

/// <summary>
/// Runs an endpoint handler and turns what it throws into the OpenAI error shape: a client that went away is only
/// logged, server faults (other than 503) are logged with their stack, and every error lands in the request log.
/// </summary>
internal static class ApiHandler
{
    /// <param name="whenStarted">Writes the error into a response that has already begun (a stream); null leaves it.</param>
    /// <param name="rejected">Counts the refusal by status, where the caller keeps metrics.</param>
    public static async Task RunAsync(HttpContext ctx, Func<HttpContext, Task> handler, Func<Exception, ApiException> toError, ILogger logger,
        string what, Func<HttpContext, ApiException, Task>? whenStarted = null, Action<int>? rejected = null)
    {
        try
        {
            await handler(ctx);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            RequestLog.For(ctx).Error = "client disconnected";
        }
        catch (Exception e)
        {
            var error = toError(e);
            if (error.Status >= 500 && error.Status != 503)
            {
                logger.LogError(e, "{What} failed", what);
            }

            RequestLog.For(ctx).Error = error.Message;
            rejected?.Invoke(error.Status);
            if (!ctx.Response.HasStarted)
            {
                await OpenAiApi.WriteError(ctx, error);
            }
            else if (whenStarted is not null)
            {
                await whenStarted(ctx, error);
            }
        }
    }
}
