using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Enclave.Gateway.Crypto;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;

namespace Enclave.Gateway.Tests;

public sealed class CryptoTests
{
    [Fact]
    public void Sm4_engine_matches_the_gb_t_32907_vector()
    {
        var key = Convert.FromHexString("0123456789abcdeffedcba9876543210");
        var engine = new SM4Engine();
        engine.Init(true, new KeyParameter(key));
        var output = new byte[16];
        engine.ProcessBlock(key, 0, output, 0);
        Assert.Equal("681edf34d206965e86b3e94f536e4246", Convert.ToHexStringLower(output));
    }

    [Theory]
    [InlineData(Aead.Aes256Gcm)]
    [InlineData(Aead.Sm4Gcm)]
    public void Round_trips_and_rejects_tampering_and_wrong_context(string algorithm)
    {
        using var dir = new TempDir();
        var file = Path.Combine(dir.Path, "master.keys");
        FileKeyProvider.AddKey(file);
        var p = new SecretProtector(new FileKeyProvider(file), algorithm);
        var env = p.Protect("数据库密码 hunter2", "db");
        Assert.DoesNotContain("hunter2", env);
        Assert.StartsWith("enc1:" + algorithm + ":", env);
        Assert.Equal("数据库密码 hunter2", p.Unprotect(env, "db"));
        Assert.ThrowsAny<CryptographicException>(() => p.Unprotect(env, "other"));

        var parts = env.Split(':');
        var body = Convert.FromBase64String(parts[4]);
        body[^1] ^= 1;
        parts[4] = Convert.ToBase64String(body);
        Assert.ThrowsAny<CryptographicException>(() => p.Unprotect(string.Join(':', parts), "db"));
    }

    [Fact]
    public void Rotation_rewraps_data_keys_so_the_old_master_key_can_be_retired()
    {
        using var dir = new TempDir();
        var file = Path.Combine(dir.Path, "master.keys");
        var oldId = FileKeyProvider.AddKey(file);
        var env = new SecretProtector(new FileKeyProvider(file)).Protect("api-token");
        var newId = FileKeyProvider.AddKey(file);
        Assert.NotEqual(oldId, newId);

        var rotated = new SecretProtector(new FileKeyProvider(file));
        var rewrapped = rotated.Rewrap(env);
        Assert.Equal(newId, SecretProtector.KeyIdOf(rewrapped));
        Assert.Equal(env.Split(':')[4], rewrapped.Split(':')[4]);

        File.WriteAllLines(file, File.ReadAllLines(file).Where(l => !l.StartsWith(oldId, StringComparison.Ordinal)));
        var retired = new SecretProtector(new FileKeyProvider(file));
        Assert.Equal("api-token", retired.Unprotect(rewrapped));
        Assert.ThrowsAny<CryptographicException>(() => retired.Unprotect(env));
    }

    [Fact]
    public async Task Tls_minimum_1_3_refuses_tls_1_2_and_accepts_1_3()
    {
        using var dir = new TempDir();
        using var rsa = RSA.Create(2048);
        var req = new CertificateRequest("CN=127.0.0.1", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        using var self = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var certFile = Path.Combine(dir.Path, "tls.crt");
        var keyFile = Path.Combine(dir.Path, "tls.key");
        await File.WriteAllTextAsync(certFile, self.ExportCertificatePem());
        await File.WriteAllTextAsync(keyFile, rsa.ExportPkcs8PrivateKeyPem());
        using var cert = GatewayTls.LoadPem(certFile, keyFile);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseEnclaveHttps(cert, GatewayTls.ParseMinimum("1.3"))));
        await using var app = builder.Build();
        app.MapGet("/", () => Results.Text("ok"));
        await app.StartAsync();
        var port = new Uri(app.Urls.First()).Port;

        Assert.Equal(SslProtocols.Tls13, await HandshakeAsync(port, SslProtocols.Tls13, cert.Thumbprint));
        await Assert.ThrowsAnyAsync<Exception>(() => HandshakeAsync(port, SslProtocols.Tls12, cert.Thumbprint));
        await app.StopAsync();
    }

    private static async Task<SslProtocols> HandshakeAsync(int port, SslProtocols protocols, string pinnedThumbprint)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        await using var ssl = new SslStream(tcp.GetStream(), false, (_, c, _, _) => c is X509Certificate2 x && x.Thumbprint == pinnedThumbprint);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "127.0.0.1", EnabledSslProtocols = protocols });
        return ssl.SslProtocol;
    }
}
