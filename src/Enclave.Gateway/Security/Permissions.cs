namespace Enclave.Gateway.Security;

/// <summary>Every permission an endpoint can require. docs/security.md holds the role matrix.</summary>
public static class Permissions
{
    public const string Inference = "inference";
    public const string ModelsRead = "models.read";
    public const string ModelsManage = "models.manage";
    public const string UsersManage = "users.manage";
    public const string KeysManage = "keys.manage";
    public const string RolesManage = "roles.manage";
    public const string PoliciesManage = "policies.manage";
    public const string AuditRead = "audit.read";
    public const string AlertsRead = "alerts.read";

    /// <summary>List and search knowledge collections the caller is on the access list of; ask questions grounded in them.</summary>
    public const string KbRead = "kb.read";

    /// <summary>Add and delete documents in collections the caller may write.</summary>
    public const string KbWrite = "kb.write";

    /// <summary>Create and delete knowledge collections and set their access lists.</summary>
    public const string KbManage = "kb.manage";

    public static IReadOnlyList<string> All { get; } =
    [
        Inference, ModelsRead, ModelsManage, UsersManage, KeysManage, RolesManage, PoliciesManage, AuditRead, AlertsRead,
        KbRead, KbWrite, KbManage,
    ];

    public static bool IsKnown(string permission) => All.Contains(permission, StringComparer.Ordinal);
}

/// <summary>Names of the built-in roles.</summary>
public static class BuiltInRoles
{
    public const string Admin = "admin";
    public const string Analyst = "analyst";
    public const string Auditor = "auditor";
}
