using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace Enclave.Gateway.Pii;

/// <summary>Kinds of personal data the detector reports.</summary>
public static class PiiTypes
{
    public const string CnResidentId = "cn_id";
    public const string Mobile = "mobile";
    public const string Landline = "landline";
    public const string BankCard = "bank_card";
    public const string Email = "email";
    public const string IPv4 = "ipv4";
    public const string IPv6 = "ipv6";
    public const string Passport = "passport";
    public const string Custom = "custom";
    public const string Keyword = "keyword";
}

public sealed record PiiMatch(string Type, int Start, int Length, string Value);

/// <summary>
/// Finds personal data in free text (Chinese and English). Candidates come from patterns and are
/// then validated (resident-ID checksum and birth date, Luhn for card numbers, address parsing) so
/// that order numbers, timestamps and similar digit runs are not reported.
/// </summary>
public sealed partial class PiiDetector
{
    private static readonly int[] IdWeights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    private const string IdCheckChars = "10X98765432";

    private readonly List<(string Name, Regex Regex)> _custom = [];
    private readonly List<string> _keywords = [];

    /// <summary>Adds an admin-defined pattern; matches are reported with type <c>custom</c>.</summary>
    public void AddCustomPattern(string name, string pattern) =>
        _custom.Add((name, new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(200))));

    /// <summary>Adds a literal keyword (case-insensitive); matches are reported with type <c>keyword</c>.</summary>
    public void AddKeyword(string keyword)
    {
        if (!string.IsNullOrEmpty(keyword))
        {
            _keywords.Add(keyword);
        }
    }

    [GeneratedRegex(@"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])", RegexOptions.CultureInvariant)]
    private static partial Regex IdCandidate();

    [GeneratedRegex(@"(?<![\d+])(?:(?:\+|00)?86[\s-]?)?(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)", RegexOptions.CultureInvariant)]
    private static partial Regex MobileCandidate();

    [GeneratedRegex(@"(?<![\d+])(?:(?:\+86[\s-]?|0086[\s-]?)(?:\(?[1-9]\d{1,2}\)?)[\s-]?|\(0\d{2,3}\)\s?|0\d{2,3}-)[2-9]\d{6,7}(?:-\d{1,5})?(?!\d)", RegexOptions.CultureInvariant)]
    private static partial Regex LandlineCandidate();

    [GeneratedRegex(@"(?<![\d-])(?:\d{4}[ -]){3}\d{4}(?:[ -]?\d{1,3})?(?![\d-])|(?<![\d-])\d{16,19}(?![\d-])", RegexOptions.CultureInvariant)]
    private static partial Regex CardCandidate();

    [GeneratedRegex(@"(?<![A-Za-z0-9._%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])", RegexOptions.CultureInvariant)]
    private static partial Regex EmailCandidate();

    [GeneratedRegex(@"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)", RegexOptions.CultureInvariant)]
    private static partial Regex IPv4Candidate();

    [GeneratedRegex(@"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])", RegexOptions.CultureInvariant)]
    private static partial Regex IPv6Candidate();

    [GeneratedRegex(@"(?<![0-9A-Za-z])(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7}|[DSP]E?\d{7})(?![0-9A-Za-z])", RegexOptions.CultureInvariant)]
    private static partial Regex PassportCandidate();

    public IReadOnlyList<PiiMatch> Detect(string text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return [];
        }

        var found = new List<PiiMatch>();
        foreach (Match m in IdCandidate().Matches(text))
        {
            if (IsValidResidentId(m.Value))
            {
                found.Add(new PiiMatch(PiiTypes.CnResidentId, m.Index, m.Length, m.Value));
            }
        }

        foreach (Match m in CardCandidate().Matches(text))
        {
            var digits = DigitsOnly(m.Value);
            if (digits.Length is >= 16 and <= 19 && digits[0] is >= '3' and <= '6' && LuhnValid(digits))
            {
                found.Add(new PiiMatch(PiiTypes.BankCard, m.Index, m.Length, m.Value));
            }
        }

        foreach (Match m in MobileCandidate().Matches(text))
        {
            found.Add(new PiiMatch(PiiTypes.Mobile, m.Index, m.Length, m.Value));
        }

        foreach (Match m in LandlineCandidate().Matches(text))
        {
            found.Add(new PiiMatch(PiiTypes.Landline, m.Index, m.Length, m.Value));
        }

        foreach (Match m in EmailCandidate().Matches(text))
        {
            found.Add(new PiiMatch(PiiTypes.Email, m.Index, m.Length, m.Value));
        }

        foreach (Match m in IPv4Candidate().Matches(text))
        {
            found.Add(new PiiMatch(PiiTypes.IPv4, m.Index, m.Length, m.Value));
        }

        foreach (Match m in IPv6Candidate().Matches(text))
        {
            if (m.Value.Count(c => c == ':') >= 2 && m.Value.Any(char.IsAsciiHexDigit)
                && IPAddress.TryParse(m.Value, out var a) && a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
                && !LooksLikeClockTime(m.Value))
            {
                found.Add(new PiiMatch(PiiTypes.IPv6, m.Index, m.Length, m.Value));
            }
        }

        foreach (Match m in PassportCandidate().Matches(text))
        {
            found.Add(new PiiMatch(PiiTypes.Passport, m.Index, m.Length, m.Value));
        }

        foreach (var (_, regex) in _custom)
        {
            foreach (Match m in regex.Matches(text))
            {
                if (m.Length > 0)
                {
                    found.Add(new PiiMatch(PiiTypes.Custom, m.Index, m.Length, m.Value));
                }
            }
        }

        foreach (var kw in _keywords)
        {
            var at = 0;
            while ((at = text.IndexOf(kw, at, StringComparison.OrdinalIgnoreCase)) >= 0)
            {
                found.Add(new PiiMatch(PiiTypes.Keyword, at, kw.Length, text.Substring(at, kw.Length)));
                at += kw.Length;
            }
        }

        // Earlier-listed (more specific, validated) types win overlaps; then longest first.
        var result = new List<PiiMatch>();
        foreach (var m in found)
        {
            if (!result.Any(r => m.Start < r.Start + r.Length && r.Start < m.Start + m.Length))
            {
                result.Add(m);
            }
        }

        result.Sort((a, b) => a.Start.CompareTo(b.Start));
        return result;
    }

    private static bool LooksLikeClockTime(string v) =>
        v.Split(':').All(p => p.Length is > 0 and <= 2 && p.All(char.IsAsciiDigit));

    /// <summary>18-digit (checksum + birth date) or 15-digit legacy (birth date 19YYMMDD) resident ID.</summary>
    public static bool IsValidResidentId(string id)
    {
        if (id.Length == 18)
        {
            if (id[0] is < '1' or > '9' || id.AsSpan(0, 17).ContainsAnyExceptInRange('0', '9'))
            {
                return false;
            }

            var sum = 0;
            for (var i = 0; i < 17; i++)
            {
                sum += (id[i] - '0') * IdWeights[i];
            }

            if (char.ToUpperInvariant(id[17]) != IdCheckChars[sum % 11])
            {
                return false;
            }

            return ValidBirthDate(id.Substring(6, 8));
        }

        if (id.Length == 15 && !id.AsSpan().ContainsAnyExceptInRange('0', '9') && id[0] is >= '1' and <= '9')
        {
            return ValidBirthDate("19" + id.Substring(6, 6));
        }

        return false;
    }

    private static bool ValidBirthDate(string yyyymmdd)
    {
        if (!DateTime.TryParseExact(yyyymmdd, "yyyyMMdd", CultureInfo.InvariantCulture, DateTimeStyles.None, out var d))
        {
            return false;
        }

        return d.Year >= 1900 && d <= DateTime.UtcNow.Date;
    }

    public static bool LuhnValid(string digits)
    {
        var sum = 0;
        var dbl = false;
        for (var i = digits.Length - 1; i >= 0; i--)
        {
            var d = digits[i] - '0';
            if (dbl)
            {
                d *= 2;
                if (d > 9)
                {
                    d -= 9;
                }
            }

            sum += d;
            dbl = !dbl;
        }

        return sum % 10 == 0;
    }

    private static string DigitsOnly(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var c in s)
        {
            if (char.IsAsciiDigit(c))
            {
                sb.Append(c);
            }
        }

        return sb.ToString();
    }

    /// <summary>Applies <paramref name="action"/> (mask or tag) to every match; allow and block return the text unchanged.</summary>
    public string Redact(string text, string action) => Redact(text, action, Detect(text));

    public static string Redact(string text, string action, IReadOnlyList<PiiMatch> matches)
    {
        if (matches.Count == 0 || action is not (PiiActions.Mask or PiiActions.Tag))
        {
            return text;
        }

        var sb = new StringBuilder(text.Length);
        var pos = 0;
        foreach (var m in matches)
        {
            sb.Append(text, pos, m.Start - pos);
            sb.Append(action == PiiActions.Tag ? "[" + m.Type.ToUpperInvariant() + "]" : Mask(m));
            pos = m.Start + m.Length;
        }

        sb.Append(text, pos, text.Length - pos);
        return sb.ToString();
    }

    /// <summary>Masks the middle of a value: <c>13800138000</c> becomes <c>138****8000</c>.</summary>
    public static string Mask(PiiMatch m)
    {
        var v = m.Value;
        if (m.Type == PiiTypes.Email)
        {
            var at = v.IndexOf('@', StringComparison.Ordinal);
            return v[0] + "***" + v[at..];
        }

        var (keepStart, keepEnd) = m.Type switch
        {
            PiiTypes.Mobile => (3, 4),
            PiiTypes.CnResidentId => (6, 4),
            PiiTypes.BankCard => (4, 4),
            PiiTypes.Landline => (4, 2),
            PiiTypes.Passport => (1, 2),
            PiiTypes.IPv4 or PiiTypes.IPv6 => (0, 0),
            _ => (0, 0),
        };
        var compact = new string(v.Where(c => !char.IsWhiteSpace(c) && c != '-').ToArray());
        if (m.Type == PiiTypes.Mobile && compact.Length > 11)
        {
            compact = compact[^11..];
        }

        if (keepStart + keepEnd >= compact.Length || (keepStart == 0 && keepEnd == 0))
        {
            return new string('*', Math.Min(compact.Length, 8));
        }

        var middle = m.Type == PiiTypes.Mobile ? 4 : compact.Length - keepStart - keepEnd;
        return compact[..keepStart] + new string('*', middle) + compact[^keepEnd..];
    }
}
