using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Security;

public sealed class UserService(GatewayStore store, KeyService keys)
{
    public async Task<UserEntity> AddAsync(string name, string? displayName = null, string? allowedCidrs = null, CancellationToken ct = default)
    {
        if (!RoleCatalog.IsValidName(name.ToLowerInvariant()) || name.Length > 128)
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_user_name", "User names are 1-64 characters of letters, digits, '-', '_' or '.'.", "name");
        }

        CidrList.Parse(allowedCidrs);
        await using var db = store.CreateContext();
        if (await db.Users.AnyAsync(u => u.Name == name, ct))
        {
            throw new GatewayException(409, "invalid_request_error", "user_exists", $"User '{name}' already exists.", "name");
        }

        var user = new UserEntity
        {
            Name = name,
            DisplayName = displayName,
            AllowedCidrs = allowedCidrs,
            CreatedAtMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        };
        db.Users.Add(user);
        await db.SaveChangesAsync(ct);
        return user;
    }

    public async Task<List<UserEntity>> ListAsync(CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.Users.AsNoTracking().OrderBy(u => u.Name).ToListAsync(ct);
    }

    /// <summary>Disables a user; every key the user owns stops authenticating.</summary>
    public async Task<bool> SetStatusAsync(string name, string status, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var user = await db.Users.FirstOrDefaultAsync(u => u.Name == name || u.Id == name, ct);
        if (user is null)
        {
            return false;
        }

        user.Status = status;
        await db.SaveChangesAsync(ct);
        await keys.InvalidateEverywhereAsync(ct);
        return true;
    }
}
