using System.Globalization;
using NodaTime;

namespace Enclave.Gateway.Security;

/// <summary>
/// Time-of-day windows such as <c>mon-fri 08:00-18:00; sat 09:00-12:00</c>: entries separated by
/// <c>;</c>, each an optional day list (<c>mon,wed</c>, ranges <c>mon-fri</c>) and a time range.
/// A range ending before it starts runs past midnight (<c>22:00-06:00</c>); <c>24:00</c> ends a day.
/// A request is allowed when any entry covers the local time.
/// </summary>
public sealed class TimeWindows
{
    private static readonly string[] DayNames = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    private readonly List<(bool[] Days, int Start, int End)> _entries;

    private TimeWindows(List<(bool[] Days, int Start, int End)> entries, string text)
    {
        _entries = entries;
        Text = text;
    }

    public static TimeWindows None { get; } = new([], "");

    public string Text { get; }

    public bool IsEmpty => _entries.Count == 0;

    /// <summary>Parses the windows; a mistake gets a 400 that says which part is wrong.</summary>
    public static TimeWindows Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return None;
        }

        var entries = new List<(bool[] Days, int Start, int End)>();
        foreach (var raw in text.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = raw.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length is < 1 or > 2)
            {
                throw Invalid(raw, "expected '[DAYS] HH:MM-HH:MM'");
            }

            var days = parts.Length == 2 ? ParseDays(parts[0], raw) : [true, true, true, true, true, true, true];
            var range = parts[^1].Split('-');
            if (range.Length != 2)
            {
                throw Invalid(raw, "the time range must be HH:MM-HH:MM");
            }

            var start = ParseTime(range[0], raw);
            var end = ParseTime(range[1], raw);
            if (start == end || start == 24 * 60)
            {
                throw Invalid(raw, "the range is empty");
            }

            entries.Add((days, start, end));
        }

        return new TimeWindows(entries, string.Join("; ", text.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)));
    }

    public bool Allows(LocalDateTime local)
    {
        if (_entries.Count == 0)
        {
            return true;
        }

        var day = (int)local.DayOfWeek - 1;
        var previous = (day + 6) % 7;
        var minute = (local.Hour * 60) + local.Minute;
        foreach (var (days, start, end) in _entries)
        {
            if (start < end ? days[day] && minute >= start && minute < end
                : (days[day] && minute >= start) || (days[previous] && minute < end))
            {
                return true;
            }
        }

        return false;
    }

    private static bool[] ParseDays(string text, string entry)
    {
        var days = new bool[7];
        foreach (var item in text.ToLowerInvariant().Split(','))
        {
            var range = item.Split('-');
            var first = Array.IndexOf(DayNames, range[0]);
            var last = range.Length == 2 ? Array.IndexOf(DayNames, range[1]) : first;
            if (range.Length > 2 || first < 0 || last < 0)
            {
                throw Invalid(entry, $"unknown day '{item}' (use mon, tue, wed, thu, fri, sat, sun)");
            }

            for (var d = first; ; d = (d + 1) % 7)
            {
                days[d] = true;
                if (d == last)
                {
                    break;
                }
            }
        }

        return days;
    }

    private static int ParseTime(string text, string entry)
    {
        var hm = text.Split(':');
        if (hm.Length != 2
            || !int.TryParse(hm[0], NumberStyles.None, CultureInfo.InvariantCulture, out var h)
            || !int.TryParse(hm[1], NumberStyles.None, CultureInfo.InvariantCulture, out var m)
            || h > 24 || m > 59 || (h == 24 && m != 0))
        {
            throw Invalid(entry, $"'{text}' is not a time of day (HH:MM, 00:00 to 24:00)");
        }

        return (h * 60) + m;
    }

    private static GatewayException Invalid(string entry, string why) =>
        new(400, "invalid_request_error", "invalid_time_window", $"Time window '{entry}': {why}.", "time_windows");

    /// <summary>Resolves an IANA zone id (from NodaTime's own tz database, so hosts without tzdata work).</summary>
    public static DateTimeZone Zone(string? id) =>
        string.IsNullOrWhiteSpace(id) ? DateTimeZone.Utc
        : DateTimeZoneProviders.Tzdb.GetZoneOrNull(id.Trim())
            ?? throw new GatewayException(400, "invalid_request_error", "invalid_time_zone", $"Unknown time zone '{id}' (use an IANA name such as Asia/Shanghai or UTC).", "time_zone");
}
