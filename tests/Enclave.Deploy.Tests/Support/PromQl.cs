using System.Text.RegularExpressions;

namespace Enclave.Deploy.Tests.Support;

/// <summary>
/// Pulls the metric names out of a PromQL expression: what is left after removing strings, label matchers, range
/// selectors, grouping clauses, function calls and keywords. Enough for the expressions of our rules and
/// dashboard, where every metric is written by name.
/// </summary>
public static partial class PromQl
{
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan",
    };

    [GeneratedRegex("\"(?:[^\"\\\\]|\\\\.)*\"")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"\{[^{}]*\}")]
    private static partial Regex LabelMatchers();

    [GeneratedRegex(@"\[[^\]]*\]")]
    private static partial Regex RangeSelector();

    [GeneratedRegex(@"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")]
    private static partial Regex Identifier();

    public static IReadOnlySet<string> MetricNames(string expression)
    {
        var e = StringLiteral().Replace(expression, " ");
        e = LabelMatchers().Replace(e, " ");
        e = RangeSelector().Replace(e, " ");
        e = Grouping().Replace(e, " ");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match m in Identifier().Matches(e))
        {
            var name = m.Groups[1].Value;
            if (m.Groups[2].Success || Keywords.Contains(name.ToLowerInvariant()))
            {
                continue; // a function call or an operator keyword
            }

            names.Add(name);
        }

        return names;
    }
}
