using System.Net;
using System.Text.Json;
using Enclave.Gateway.Hosting;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Enclave.Gateway.Tests;

public sealed class PermissionMatrixTests
{
    private sealed record Row(string Method, string Route, string Permission, Dictionary<string, bool> Allowed);

    private static List<Row> ReadMatrix()
    {
        var text = File.ReadAllText(Path.Combine(RepoFiles.Root, "docs", "security.md"));
        var start = text.IndexOf("<!-- permission-matrix:start -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- permission-matrix:end -->", StringComparison.Ordinal);
        Assert.True(start >= 0 && end > start, "docs/security.md lacks the permission matrix markers");
        var lines = text[start..end].Split('\n').Where(l => l.StartsWith('|')).ToList();
        var header = lines[0].Split('|', StringSplitOptions.TrimEntries)[1..^1];
        var roles = header[2..];
        var rows = new List<Row>();
        foreach (var line in lines.Skip(2))
        {
            var cells = line.Split('|', StringSplitOptions.TrimEntries)[1..^1];
            var ep = cells[0].Split(' ', 2);
            var allowed = new Dictionary<string, bool>();
            for (var i = 0; i < roles.Length; i++)
            {
                Assert.True(cells[2 + i] is "allow" or "deny", $"matrix cell '{cells[2 + i]}' must be allow or deny");
                allowed[roles[i]] = cells[2 + i] == "allow";
            }

            rows.Add(new Row(ep[0], ep[1], cells[1], allowed));
        }

        return rows;
    }

    [Fact]
    public async Task Every_endpoint_for_every_role_matches_the_written_matrix()
    {
        var matrix = ReadMatrix();
        Assert.True(matrix.Count >= 15);
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t, o => o.FailedAuthMaxFailures = 1000);

        var endpoints = host.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .SelectMany(e => (e.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.HttpMethodMetadata>()?.HttpMethods ?? ["GET"])
                .Select(m => (Method: m, Route: "/" + e.RoutePattern.RawText!.TrimStart('/'), Endpoint: e)))
            .Where(x => x.Endpoint.Metadata.GetMetadata<GatewayAnonymousAttribute>() is null)
            .ToList();

        var listed = matrix.Select(r => $"{r.Method} {r.Route}").ToHashSet();
        var served = endpoints.Select(e => $"{e.Method} {e.Route}").ToHashSet();
        Assert.Empty(served.Except(listed));
        Assert.Empty(listed.Except(served));

        var keys = new Dictionary<string, string>();
        foreach (var role in matrix[0].Allowed.Keys)
        {
            keys[role] = await host.KeyAsync(role);
        }

        var checkedCount = 0;
        foreach (var (method, route, endpoint) in endpoints)
        {
            var row = matrix.Single(r => r.Method == method && r.Route == route);
            Assert.Equal(row.Permission, endpoint.Metadata.GetMetadata<RequirePermissionAttribute>()?.Permission);
            var path = route.Replace("{name}", "nobody", StringComparison.Ordinal).Replace("{id}", "nokey", StringComparison.Ordinal)
                .Replace("{scope}", "key", StringComparison.Ordinal).Replace("{subject}", "nokey", StringComparison.Ordinal);
            foreach (var (role, allowed) in row.Allowed)
            {
                var body = method is "POST" or "PUT" ? "{}" : null;
                using var resp = await host.SendAsync(new HttpMethod(method), path, keys[role], body);
                var text = await resp.Content.ReadAsStringAsync();
                var denied = resp.StatusCode == HttpStatusCode.Forbidden && text.Contains("permission_denied", StringComparison.Ordinal);
                Assert.True(allowed != denied, $"{role} {method} {route}: expected {(allowed ? "allow" : "deny")}, got {(int)resp.StatusCode} {text}");
                Assert.NotEqual(HttpStatusCode.Unauthorized, resp.StatusCode);
                checkedCount++;
            }
        }

        Assert.Equal(matrix.Count * 3, checkedCount);
    }

    [Fact]
    public async Task Custom_role_is_allowed_exactly_the_rows_of_its_permission()
    {
        var matrix = ReadMatrix();
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        await Security.RoleCatalog.CreateAsync(t.Store, "readers", ["models.read"], null, null);
        var key = await host.KeyAsync("readers");
        foreach (var row in matrix.Where(r => r.Method == "GET" && !r.Route.Contains('{')))
        {
            using var resp = await host.SendAsync(HttpMethod.Get, row.Route, key);
            Assert.Equal(row.Permission == "models.read", resp.StatusCode != HttpStatusCode.Forbidden);
        }
    }

    [Fact]
    public async Task Denials_use_the_openai_error_shape()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        using var resp = await host.SendAsync(HttpMethod.Get, "/admin/keys", await host.KeyAsync("analyst"));
        Assert.Equal(HttpStatusCode.Forbidden, resp.StatusCode);
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync());
        var err = doc.RootElement.GetProperty("error");
        Assert.Equal("permission_denied", err.GetProperty("code").GetString());
        Assert.Equal("permission_error", err.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(err.GetProperty("message").GetString()));
        Assert.True(err.TryGetProperty("param", out _));
    }
}
