using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Limits;

/// <summary>Settled token counts of budget periods, kept in the gateway store so budgets survive a restart.</summary>
public sealed class TokenUsageStore(GatewayStore store)
{
    public async Task<long> GetAsync(string counter, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.TokenUsage.AsNoTracking().Where(u => u.Counter == counter).Select(u => u.Tokens).FirstOrDefaultAsync(ct);
    }

    /// <summary>Adds atomically in the database (several processes may share the store).</summary>
    public async Task AddAsync(string counter, long tokens, long expiresAtMs, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        for (var attempt = 0; ; attempt++)
        {
            var updated = await db.TokenUsage.Where(u => u.Counter == counter)
                .ExecuteUpdateAsync(s => s.SetProperty(u => u.Tokens, u => u.Tokens + tokens), ct);
            if (updated > 0)
            {
                return;
            }

            db.TokenUsage.Add(new TokenUsageEntity { Counter = counter, Tokens = tokens, ExpiresAtMs = expiresAtMs });
            try
            {
                await db.SaveChangesAsync(ct);
                return;
            }
            catch (DbUpdateException) when (attempt < 3)
            {
                // Another process inserted the row first; add to it instead.
                db.ChangeTracker.Clear();
            }
        }
    }

    /// <summary>Removes periods that ended long ago.</summary>
    public async Task<int> PruneAsync(long nowMs, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.TokenUsage.Where(u => u.ExpiresAtMs < nowMs).ExecuteDeleteAsync(ct);
    }
}
