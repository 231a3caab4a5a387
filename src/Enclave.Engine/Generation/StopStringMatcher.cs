namespace Enclave.Engine.Generation;

/// <summary>
/// Finds stop strings in streamed text, across token boundaries, and holds back just enough of the tail that could
/// still turn into a stop string, so a stop string never reaches the caller, even partially.
/// </summary>
public sealed class StopStringMatcher(IReadOnlyList<string> stops)
{
    private readonly System.Text.StringBuilder pending = new();

    /// <summary>Appends text; returns what is safe to emit and, if a stop string completed, which one (text after it is dropped).</summary>
    public (string Emit, string? Matched) Append(string text)
    {
        if (stops.Count == 0)
        {
            return (text, null);
        }

        pending.Append(text);
        var buffer = pending.ToString();
        var first = -1;
        string? matched = null;
        foreach (var stop in stops)
        {
            var at = buffer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first))
            {
                first = at;
                matched = stop;
            }
        }

        if (matched is not null)
        {
            pending.Clear();
            return (buffer[..first], matched);
        }

        // Keep the longest suffix that is a proper prefix of some stop string.
        var hold = 0;
        foreach (var stop in stops)
        {
            for (var len = Math.Min(stop.Length - 1, buffer.Length); len > hold; len--)
            {
                if (buffer.AsSpan(buffer.Length - len).SequenceEqual(stop.AsSpan(0, len)))
                {
                    hold = len;
                    break;
                }
            }
        }

        pending.Clear();
        pending.Append(buffer, buffer.Length - hold, hold);
        return (buffer[..^hold], null);
    }

    /// <summary>Releases what was held back once generation ended without a stop string.</summary>
    public string Flush()
    {
        var rest = pending.ToString();
        pending.Clear();
        return rest;
    }
}
