using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Enclave.Operations.Tests.Support;

/// <summary>
/// A real Kestrel server on 127.0.0.1 serving one repository in the Hugging Face hub's URL layout (revision info,
/// paged recursive tree with LFS metadata, resolve with HTTP Range) and in ModelScope's. It can drop the connection
/// in the middle of a file once, or serve altered bytes, and logs every download with its Range header.
/// </summary>
public sealed class FixtureHub : IAsyncDisposable
{
    public const string Commit = "3f2c0a9e5b7d4c1f8e6a2b9d0c7e5f4a3b2c1d0e";
    private readonly WebApplication app;
    private readonly Dictionary<string, byte[]> files;
    private int dropped;

    private FixtureHub(string repo, Dictionary<string, byte[]> files, WebApplication app)
    {
        Repo = repo;
        this.files = files;
        this.app = app;
    }

    public string Repo { get; }
    public Uri Endpoint { get; private set; } = null!;

    /// <summary>Path and Range header of every file download, in arrival order.</summary>
    public ConcurrentQueue<(string Path, string? Range)> Downloads { get; } = new();

    /// <summary>Drop the connection once, after this many bytes of this file.</summary>
    public (string Path, int AfterBytes)? DropOnce { get; set; }

    /// <summary>Serve this file with one byte flipped (the listing still has the true hash).</summary>
    public string? Corrupt { get; set; }

    /// <summary>Tree page size, small so that the Link-header paging is exercised.</summary>
    public int PageSize { get; set; } = 3;

    public static async Task<FixtureHub> StartAsync(string repo, string directory)
    {
        var files = Directory.GetFiles(directory).Order(StringComparer.Ordinal).ToDictionary(f => Path.GetFileName(f)!, File.ReadAllBytes, StringComparer.Ordinal);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var hub = new FixtureHub(repo, files, app);
        hub.Map();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        hub.Endpoint = new Uri(address.TrimEnd('/') + "/");
        return hub;
    }

    private static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    // Git names objects by SHA-1; the hub lists that id for non-LFS files, so the fixture must too.
#pragma warning disable CA5350
    private static string GitOid(byte[] b) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {b.Length}\0"), .. b]));
#pragma warning restore CA5350

    private static bool IsLfs(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal);

    private void Map()
    {
        app.MapGet("/api/models/{owner}/{name}/revision/{revision}", (string owner, string name, string revision) =>
            $"{owner}/{name}" != Repo ? Results.NotFound() : Results.Json(new { id = Repo, sha = Commit, siblings = files.Keys.Select(k => new { rfilename = k }) }));

        app.MapGet("/api/models/{owner}/{name}/tree/{revision}", (HttpContext http, string owner, string name, string revision, int? cursor) =>
        {
            if ($"{owner}/{name}" != Repo || revision != Commit)
            {
                return Results.NotFound();
            }

            var start = cursor ?? 0;
            var page = files.Skip(start).Take(PageSize).Select(f => IsLfs(f.Key)
                ? (object)new { type = "file", oid = GitOid(Encoding.ASCII.GetBytes("pointer " + f.Key)), size = 134, path = f.Key, lfs = new { oid = Sha256(f.Value), size = f.Value.Length, pointerSize = 134 } }
                : new { type = "file", oid = GitOid(f.Value), size = f.Value.Length, path = f.Key }).ToList();
            if (start + PageSize < files.Count)
            {
                http.Response.Headers.Append("Link", $"<{Endpoint}api/models/{Repo}/tree/{revision}?recursive=true&cursor={start + PageSize}>; rel=\"next\"");
            }

            return Results.Json(page);
        });

        app.MapGet("/{owner}/{name}/resolve/{revision}/{**path}", (HttpContext http, string owner, string name, string revision, string path) =>
            $"{owner}/{name}" == Repo && revision == Commit ? ServeAsync(http, path) : Task.FromResult(Results.NotFound()));

        // ModelScope answers in PascalCase, so no camelCase naming policy here.
        app.MapGet("/api/v1/models/{owner}/{name}/repo/files", (string owner, string name) =>
            $"{owner}/{name}" != Repo ? Results.NotFound() : Results.Json(new
            {
                Code = 200,
                Data = new { Files = files.Select(f => new { Name = f.Key, Path = f.Key, Type = "blob", Size = f.Value.Length, Sha256 = Sha256(f.Value) }) },
            }, new System.Text.Json.JsonSerializerOptions()));

        app.MapGet("/api/v1/models/{owner}/{name}/repo", (HttpContext http, string owner, string name, string FilePath) =>
            $"{owner}/{name}" == Repo ? ServeAsync(http, FilePath) : Task.FromResult(Results.NotFound()));
    }

    private async Task<IResult> ServeAsync(HttpContext http, string path)
    {
        if (!files.TryGetValue(path, out var content))
        {
            return Results.NotFound();
        }

        var range = http.Request.Headers.Range.ToString();
        Downloads.Enqueue((path, range.Length == 0 ? null : range));
        if (path == Corrupt)
        {
            content = (byte[])content.Clone();
            content[content.Length / 2] ^= 0x5A;
        }

        long offset = 0;
        if (range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            offset = long.Parse(range["bytes=".Length..^1], System.Globalization.CultureInfo.InvariantCulture);
            http.Response.StatusCode = StatusCodes.Status206PartialContent;
            http.Response.Headers.ContentRange = $"bytes {offset}-{content.Length - 1}/{content.Length}";
        }

        http.Response.ContentLength = content.Length - offset;
        http.Response.ContentType = "application/octet-stream";
        if (DropOnce is { } drop && drop.Path == path && Interlocked.Exchange(ref dropped, 1) == 0)
        {
            await http.Response.Body.WriteAsync(content.AsMemory((int)offset, drop.AfterBytes));
            await http.Response.Body.FlushAsync();
            // Give the client the bytes already sent, then cut the connection as a failing network would.
            await Task.Delay(300);
            http.Abort();
            return Results.Empty;
        }

        await http.Response.Body.WriteAsync(content.AsMemory((int)offset));
        return Results.Empty;
    }

    public ValueTask DisposeAsync() => app.DisposeAsync();
}

/// <summary>A temporary directory removed at the end of a test.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir() => Path = Directory.CreateTempSubdirectory("enclave-ops-").FullName;

    public string Path { get; }

    public string Sub(string name)
    {
        var p = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
