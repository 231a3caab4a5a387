using Enclave.Gateway.Pii;
using Enclave.Knowledge.Store;

namespace Enclave.Knowledge.Cleaning;

/// <summary>Result of scrubbing: the text to store and what was found (types only, never the values).</summary>
public sealed record ScrubResult(string Text, IReadOnlyList<string> FoundTypes);

/// <summary>
/// Finds personal data in text before it is stored or embedded. The knowledge base only needs this seam; the
/// gateway's detector is one implementation.
/// </summary>
public interface ITextScrubber
{
    /// <summary>Masks what it finds when <paramref name="mask"/> is set; always reports the types found.</summary>
    ScrubResult Scrub(string text, bool mask);
}

/// <summary>The gateway's pattern detector (resident ids with checksum, mobiles, landlines, Luhn-valid cards, e-mail, IPs, passports).</summary>
public sealed class GatewayPiiScrubber(PiiDetector? detector = null) : ITextScrubber
{
    private readonly PiiDetector detector = detector ?? new PiiDetector();

    public ScrubResult Scrub(string text, bool mask)
    {
        var matches = detector.Detect(text);
        if (matches.Count == 0)
        {
            return new ScrubResult(text, []);
        }

        var types = matches.Select(m => m.Type).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        return new ScrubResult(mask ? PiiDetector.Redact(text, PiiActions.Mask, matches) : text, types);
    }
}

/// <summary>Thrown when a collection's PII policy is <see cref="PiiPolicies.Drop"/> and the document holds personal data.</summary>
public sealed class PiiRejectedException(IReadOnlyList<string> types)
    : Exception($"the document contains personal data ({string.Join(", ", types)}) and the collection's PII policy is 'drop': nothing of it was stored")
{
    public IReadOnlyList<string> Types { get; } = types;
}
