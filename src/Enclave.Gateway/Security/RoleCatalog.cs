using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Security;

/// <summary>Built-in roles and custom role management.</summary>
public static class RoleCatalog
{
    /// <summary>
    /// Built-in permission sets. Admins run the deployment but do not read the audit trail they are
    /// recorded in; auditors read it but cannot run inference (separation of duties).
    /// </summary>
    public static IReadOnlyDictionary<string, string[]> BuiltIn { get; } = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        [BuiltInRoles.Admin] =
        [
            Permissions.Inference, Permissions.ModelsRead, Permissions.ModelsManage, Permissions.UsersManage,
            Permissions.KeysManage, Permissions.RolesManage, Permissions.PoliciesManage,
            Permissions.KbRead, Permissions.KbWrite, Permissions.KbManage,
        ],
        [BuiltInRoles.Analyst] = [Permissions.Inference, Permissions.ModelsRead, Permissions.KbRead, Permissions.KbWrite],
        [BuiltInRoles.Auditor] = [Permissions.AuditRead, Permissions.AlertsRead],
    };

    private static readonly Dictionary<string, string> Descriptions = new(StringComparer.Ordinal)
    {
        [BuiltInRoles.Admin] = "Deploy/unload models, change parameters, manage users, keys, roles and policies",
        [BuiltInRoles.Analyst] = "Inference and its own results",
        [BuiltInRoles.Auditor] = "Read and search audit records, see alerts; no inference",
    };

    public static async Task SeedBuiltInRolesAsync(GatewayStore store, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var existing = await db.Roles.Where(r => r.BuiltIn).ToDictionaryAsync(r => r.Name, ct);
        var changed = false;
        foreach (var (name, perms) in BuiltIn)
        {
            var joined = string.Join(' ', perms);
            if (existing.TryGetValue(name, out var role))
            {
                if (role.Permissions != joined)
                {
                    role.Permissions = joined;
                    changed = true;
                }

                continue;
            }

            db.Roles.Add(new RoleEntity
            {
                Name = name,
                BuiltIn = true,
                Permissions = joined,
                Description = Descriptions[name],
                CreatedAtMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            });
            changed = true;
        }

        if (!changed)
        {
            return;
        }

        try
        {
            await db.SaveChangesAsync(ct);
        }
        catch (DbUpdateException)
        {
            // Another replica seeded concurrently; the rows it wrote are the same.
        }
    }

    public static async Task<RoleEntity> CreateAsync(GatewayStore store, string name, IEnumerable<string> permissions, string? description, string? allowedCidrs, CancellationToken ct = default)
    {
        if (!IsValidName(name))
        {
            throw new GatewayException(400, "invalid_request_error", "invalid_role_name", "Role names are 1-64 characters of a-z, 0-9, '-', '_' or '.'.");
        }

        var perms = permissions.SelectMany(p => p.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries)).Distinct(StringComparer.Ordinal).ToArray();
        var unknown = perms.Where(p => !Permissions.IsKnown(p)).ToArray();
        if (unknown.Length > 0)
        {
            throw new GatewayException(400, "invalid_request_error", "unknown_permission", "Unknown permission(s): " + string.Join(", ", unknown));
        }

        CidrList.Parse(allowedCidrs);
        await using var db = store.CreateContext();
        if (await db.Roles.AnyAsync(r => r.Name == name, ct))
        {
            throw new GatewayException(409, "invalid_request_error", "role_exists", $"Role '{name}' already exists.");
        }

        var role = new RoleEntity
        {
            Name = name,
            Permissions = string.Join(' ', perms),
            Description = description,
            AllowedCidrs = allowedCidrs,
            CreatedAtMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        };
        db.Roles.Add(role);
        await db.SaveChangesAsync(ct);
        return role;
    }

    public static async Task<List<RoleEntity>> ListAsync(GatewayStore store, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        return await db.Roles.AsNoTracking().OrderBy(r => r.Name).ToListAsync(ct);
    }

    internal static bool IsValidName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_' or '.');
}
