using Enclave.Gateway.Audit;
using Enclave.Gateway.Limits;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Enclave.Gateway.Hosting;

/// <summary>
/// Keeps <see cref="GatewayOptions.AuditRetentionDays"/> of audit records in the store: older ones
/// move to signed, compressed archive files; archives older than
/// <see cref="GatewayOptions.AuditArchiveKeepDays"/> are deleted. Also drops ended budget periods.
/// </summary>
public sealed class AuditRetentionService(
    IOptions<GatewayOptions> options,
    AuditLog audit,
    TokenUsageStore usage,
    TimeProvider time,
    ILogger<AuditRetentionService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        if (o.AuditRetentionIntervalMinutes <= 0)
        {
            return;
        }

        using var timer = new PeriodicTimer(TimeSpan.FromMinutes(o.AuditRetentionIntervalMinutes), time);
        do
        {
            try
            {
                await RunOnceAsync(stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogError(e, "Audit retention run failed; it is retried at the next interval");
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    public async Task RunOnceAsync(CancellationToken ct)
    {
        var o = options.Value;
        if (o.AuditRetentionDays > 0)
        {
            var directory = o.AuditArchiveDirectory ?? Path.Combine(o.ResolveHome(), "audit-archive");
            if (await audit.ArchiveOlderThanAsync(TimeSpan.FromDays(o.AuditRetentionDays), directory, ct) is { } archived)
            {
                logger.LogInformation("Archived {Count} audit records older than {Days} days to {File}", archived.Count, o.AuditRetentionDays, archived.File);
            }
        }

        if (o.AuditArchiveKeepDays > 0)
        {
            foreach (var file in await audit.PruneArchivesAsync(time.GetUtcNow() - TimeSpan.FromDays(o.AuditArchiveKeepDays), ct))
            {
                logger.LogInformation("Deleted audit archive {File}, older than {Days} days", file, o.AuditArchiveKeepDays);
            }
        }

        await usage.PruneAsync(time.GetUtcNow().ToUnixTimeMilliseconds(), ct);
    }
}
