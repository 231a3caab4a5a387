using System.Net;

namespace Enclave.Gateway.Security;

/// <summary>
/// Resolves the client address. <c>X-Forwarded-For</c> is honoured only when the direct peer is a
/// trusted proxy; the list is then walked right to left, skipping further trusted proxies, and the
/// first untrusted hop is the client.
/// </summary>
public sealed class ClientAddress(CidrList trustedProxies)
{
    public IPAddress? Resolve(IPAddress? remote, string? forwardedFor)
    {
        if (remote is null)
        {
            return null;
        }

        if (remote.IsIPv4MappedToIPv6)
        {
            remote = remote.MapToIPv4();
        }

        if (trustedProxies.IsEmpty || !trustedProxies.Allows(remote) || string.IsNullOrWhiteSpace(forwardedFor))
        {
            return remote;
        }

        var hops = forwardedFor.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var client = remote;
        for (var i = hops.Length - 1; i >= 0; i--)
        {
            if (!IPAddress.TryParse(hops[i], out var hop))
            {
                // Garbage in the header: stop at the last address we could trust.
                return client;
            }

            if (hop.IsIPv4MappedToIPv6)
            {
                hop = hop.MapToIPv4();
            }

            client = hop;
            if (!trustedProxies.Allows(hop))
            {
                return hop;
            }
        }

        return client;
    }
}
