using System.Net;

namespace Enclave.Gateway.Security;

/// <summary>A parsed comma-separated list of IPv4/IPv6 networks; an empty list allows every address.</summary>
public sealed class CidrList
{
    private readonly IPNetwork[] _networks;

    private CidrList(IPNetwork[] networks) => _networks = networks;

    public static CidrList Any { get; } = new([]);

    public bool IsEmpty => _networks.Length == 0;

    public static CidrList Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return Any;
        }

        var list = new List<IPNetwork>();
        foreach (var raw in text.Split([',', ';', ' '], StringSplitOptions.RemoveEmptyEntries))
        {
            var part = raw.Trim();
            if (!part.Contains('/', StringComparison.Ordinal))
            {
                if (!IPAddress.TryParse(part, out var single))
                {
                    throw new GatewayException(400, "invalid_request_error", "invalid_cidr", $"'{part}' is not an IP address or CIDR network.");
                }

                part += single.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "/128" : "/32";
            }

            if (!IPNetwork.TryParse(part, out var net)
                || !IPAddress.TryParse(part[..part.IndexOf('/', StringComparison.Ordinal)], out var given)
                || !given.Equals(net.BaseAddress))
            {
                throw new GatewayException(400, "invalid_request_error", "invalid_cidr", $"'{part}' is not a CIDR network (host bits must be zero).");
            }

            list.Add(net);
        }

        return new CidrList([.. list]);
    }

    public bool Allows(IPAddress? address)
    {
        if (_networks.Length == 0)
        {
            return true;
        }

        if (address is null)
        {
            return false;
        }

        var candidates = address.IsIPv4MappedToIPv6 ? new[] { address, address.MapToIPv4() } : [address];
        foreach (var net in _networks)
        {
            foreach (var a in candidates)
            {
                if (a.AddressFamily == net.BaseAddress.AddressFamily && net.Contains(a))
                {
                    return true;
                }
            }
        }

        return false;
    }
}
