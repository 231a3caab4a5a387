namespace Enclave.Gateway.Pii;

/// <summary>What a policy does with detected PII.</summary>
public static class PiiActions
{
    /// <summary>Pass unchanged.</summary>
    public const string Allow = "allow";
    /// <summary>Keep a few characters, star the rest (<c>138****8000</c>).</summary>
    public const string Mask = "mask";
    /// <summary>Replace with a type tag (<c>[PHONE]</c>).</summary>
    public const string Tag = "tag";
    /// <summary>Reject the request (400 <c>content_filter</c>).</summary>
    public const string Block = "block";

    public static bool IsValid(string action) => action is Allow or Mask or Tag or Block;
}
