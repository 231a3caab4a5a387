using System.Threading.Channels;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Knowledge;
using Enclave.Knowledge.Retrieval;
using Enclave.Server.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Knowledge;

/// <summary>
/// The server's knowledge base: opened on first use (so a server that never touches it creates nothing on disk),
/// with one background worker running ingestion jobs in submission order. Jobs a previous process left unfinished
/// are queued again when the knowledge base opens, and resume from the step they had reached.
/// </summary>
public sealed class KnowledgeService : IAsyncDisposable
{
    private readonly ServerOptions options;
    private readonly ILogger logger;
    private readonly Channel<string> jobs = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource stopping = new();
    private readonly Lazy<Task<KnowledgeBase>> knowledge;
    private readonly Task worker;

    public KnowledgeService(ServerOptions options, ILogger logger)
    {
        this.options = options;
        this.logger = logger;
        knowledge = new Lazy<Task<KnowledgeBase>>(OpenAsync);
        worker = Task.Run(RunAsync);
    }

    public Task<KnowledgeBase> GetAsync() => knowledge.Value;

    public void Enqueue(string jobId) => jobs.Writer.TryWrite(jobId);

    private async Task<KnowledgeBase> OpenAsync()
    {
        var settings = options.Knowledge;
        if (settings.Directory is null && options.Home is not null)
        {
            settings.Directory = Path.Combine(options.Home, "knowledge");
        }

        var kb = await KnowledgeBase.OpenAsync(settings, options.VectorIndexFactory, options.KnowledgeEmbeddings, options.KnowledgeReranker, logger: logger);
        foreach (var id in await kb.UnfinishedJobsAsync())
        {
            Enqueue(id);
        }

        return kb;
    }

    private async Task RunAsync()
    {
        try
        {
            await foreach (var id in jobs.Reader.ReadAllAsync(stopping.Token))
            {
                try
                {
                    var kb = await GetAsync();
                    await kb.RunJobAsync(id, stopping.Token);
                }
                catch (OperationCanceledException) when (stopping.IsCancellationRequested)
                {
                    // shutting down: the job stays queued in the store and resumes at the next start
                    return;
                }
                catch (Exception e)
                {
                    logger.LogError(e, "knowledge job {Job} could not run", id);
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// The caller as the knowledge base sees it: the gateway user, or for a key without a user the key itself
    /// (<c>key:PREFIX</c>; key names are free labels and could be reused). Null (the local operator) without the gateway.
    /// </summary>
    public static KnowledgeCaller? Caller(HttpContext ctx) =>
        ctx.Items.TryGetValue(GatewayMiddleware.PrincipalItem, out var p) && p is GatewayPrincipal principal
            ? new KnowledgeCaller(principal.UserName ?? "key:" + principal.KeyPrefix, [principal.Role])
            : null;

    /// <summary>Whether the caller holds <paramref name="permission"/>; always true without the gateway.</summary>
    public static bool Has(HttpContext ctx, string permission) =>
        !ctx.Items.TryGetValue(GatewayMiddleware.PrincipalItem, out var p) || p is not GatewayPrincipal principal || principal.Has(permission);

    public async ValueTask DisposeAsync()
    {
        jobs.Writer.TryComplete();
        await stopping.CancelAsync();
        await worker;
        if (knowledge.IsValueCreated)
        {
            try
            {
                await (await knowledge.Value).DisposeAsync();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                logger.LogWarning(e, "the knowledge base did not close cleanly");
            }
        }

        stopping.Dispose();
    }
}
