using Enclave.Gateway.Limits;
using Enclave.Gateway.Store;
using NodaTime;

namespace Enclave.Gateway.Security;

/// <summary>A time-window condition and the zone it is read in, with where it came from (for the error).</summary>
public sealed record WindowCondition(string Scope, TimeWindows Windows, DateTimeZone Zone);

/// <summary>
/// The policies that apply to one key, composed once when the key is authenticated (and cached
/// with it): key, user and role rows narrow each other.
/// </summary>
public sealed record EffectivePolicy(
    IReadOnlyList<CidrList> Cidrs,
    IReadOnlyList<IReadOnlySet<string>> ModelLists,
    LimitPolicy KeyLimits,
    LimitPolicy UserLimits,
    IReadOnlyList<WindowCondition> Windows,
    string? PromptPiiAction,
    string? AuditPiiAction,
    IReadOnlyList<string> BlockedPhrases)
{
    public static EffectivePolicy None { get; } = new([], [], LimitPolicy.None, LimitPolicy.None, [], null, null, []);

    public bool AllowsModel(string model) => ModelLists.All(l => l.Contains(model));

    /// <summary>The first window condition the instant falls outside of, or null.</summary>
    public WindowCondition? OutsideWindow(Instant now) => Windows.FirstOrDefault(w => !w.Windows.Allows(now.InZone(w.Zone).LocalDateTime));

    internal static EffectivePolicy Compose(
        PolicyEntity? key, PolicyEntity? user, PolicyEntity? role, ApiKeyEntity keyEntity, DateTimeZone defaultZone)
    {
        PolicyEntity?[] rows = [key, user, role];
        var present = rows.Where(r => r is not null).Select(r => r!).ToList();
        var keyLimits = new LimitPolicy(keyEntity.RequestsPerMinute, keyEntity.TokensPerMinute);
        if (key is not null)
        {
            keyLimits = keyLimits.Narrow(Limits(key));
        }

        if (role is not null)
        {
            // A role's limits apply to each of its keys.
            keyLimits = keyLimits.Narrow(Limits(role));
        }

        return new EffectivePolicy(
            [.. present.Where(p => !string.IsNullOrWhiteSpace(p.AllowedCidrs)).Select(p => CidrList.Parse(p.AllowedCidrs))],
            [.. present.Where(p => !string.IsNullOrWhiteSpace(p.AllowedModels)).Select(p => (IReadOnlySet<string>)SplitModels(p.AllowedModels))],
            keyLimits,
            user is null ? LimitPolicy.None : Limits(user),
            [.. present.Where(p => !string.IsNullOrWhiteSpace(p.TimeWindows))
                .Select(p => new WindowCondition(p.Scope, TimeWindows.Parse(p.TimeWindows), p.TimeZone is null ? defaultZone : TimeWindows.Zone(p.TimeZone)))],
            key?.PromptPiiAction ?? keyEntity.PromptPiiAction ?? user?.PromptPiiAction ?? role?.PromptPiiAction,
            key?.AuditPiiAction ?? user?.AuditPiiAction ?? role?.AuditPiiAction,
            [.. present.SelectMany(p => SplitPhrases(p.BlockedPhrases)).Distinct(StringComparer.OrdinalIgnoreCase)]);
    }

    private static LimitPolicy Limits(PolicyEntity p) => new(p.RequestsPerMinute, p.TokensPerMinute, p.DailyTokenBudget, p.MonthlyTokenBudget);

    internal static HashSet<string> SplitModels(string? models) =>
        (models ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);

    internal static IEnumerable<string> SplitPhrases(string? phrases) =>
        (phrases ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
