using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Enclave.Gateway.Crypto;

/// <summary>Kestrel HTTPS from a PEM certificate and key with a minimum TLS version (default 1.3).</summary>
public static class GatewayTls
{
    public static SslProtocols ParseMinimum(string? value) => value?.Trim() switch
    {
        null or "" or "1.3" => SslProtocols.Tls13,
        "1.2" => SslProtocols.Tls12 | SslProtocols.Tls13,
        _ => throw new ArgumentException($"--tls-min must be 1.2 or 1.3, not '{value}'.", nameof(value)),
    };

    public static X509Certificate2 LoadPem(string certPemFile, string keyPemFile)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certPemFile, keyPemFile);
        // Re-import so the private key is usable by SslStream on every platform.
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>Applies the certificate and minimum protocol to one listener.</summary>
    public static ListenOptions UseEnclaveHttps(this ListenOptions listen, X509Certificate2 certificate, SslProtocols protocols = SslProtocols.Tls13) =>
        listen.UseHttps(new HttpsConnectionAdapterOptions
        {
            ServerCertificate = certificate,
            SslProtocols = protocols,
        });
}
