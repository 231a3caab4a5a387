using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.FileSystemGlobbing;

namespace Enclave.Operations.Registry;

public enum HubLayout
{
    /// <summary>Hugging Face: <c>/api/models/REPO/tree/REV</c> and <c>/REPO/resolve/REV/PATH</c>.</summary>
    HuggingFace,

    /// <summary>ModelScope: <c>/api/v1/models/REPO/repo/files</c> and <c>/api/v1/models/REPO/repo?FilePath=</c>.</summary>
    ModelScope,
}

/// <summary>A file as the hub lists it, with whatever hash the hub publishes for it.</summary>
public sealed record HubFile(string Path, long Size, string? Sha256, string? GitBlobSha1);

public sealed record HubListing(string Repo, string Revision, string Commit, IReadOnlyList<HubFile> Files);

public sealed record PullProgress(string Path, long Done, long Total, bool Finished);

public sealed record PullOptions
{
    public int Parallelism { get; init; } = 4;
    public int MaxAttempts { get; init; } = 5;
    public IReadOnlyList<string> Include { get; init; } = [];
    public IProgress<PullProgress>? Progress { get; init; }
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(200);
}

/// <summary>
/// Talks to a Hugging Face-compatible hub (or a ModelScope-compatible one): lists a revision's files with sizes and
/// published hashes, and downloads them resumably (HTTP Range) in parallel, verifying each against the hub's SHA-256
/// (LFS files) or git blob SHA-1 (small files) before anything is installed.
/// </summary>
public sealed partial class HubClient(HttpClient http, Uri endpoint, HubLayout layout, string? token = null)
{
    public const string DefaultEndpoint = "https://huggingface.co";

    public Uri Endpoint { get; } = endpoint;
    public HubLayout Layout { get; } = layout;

    /// <summary>--endpoint, else HF_ENDPOINT (as huggingface_hub reads it), else the public hub.</summary>
    public static Uri ResolveEndpoint(string? explicitEndpoint)
    {
        var value = !string.IsNullOrWhiteSpace(explicitEndpoint) ? explicitEndpoint : Environment.GetEnvironmentVariable("HF_ENDPOINT");
        value = string.IsNullOrWhiteSpace(value) ? DefaultEndpoint : value.Trim();
        return Uri.TryCreate(value.TrimEnd('/') + "/", UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new ArgumentException($"--endpoint {value}: not an http(s) URL");
    }

    public static HubLayout ParseLayout(string value) => value.Trim().ToLowerInvariant() switch
    {
        "hf" or "huggingface" or "hugging-face" => HubLayout.HuggingFace,
        "modelscope" or "ms" => HubLayout.ModelScope,
        _ => throw new ArgumentException($"--layout {value}: use huggingface or modelscope"),
    };

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex RepoPattern();

    /// <summary>Splits <c>REPO[@REVISION]</c>; the revision defaults to main (master on ModelScope).</summary>
    public static (string Repo, string Revision) ParseReference(string reference, HubLayout layout)
    {
        var at = reference.IndexOf('@', StringComparison.Ordinal);
        var repo = at < 0 ? reference : reference[..at];
        var revision = at < 0 ? (layout == HubLayout.ModelScope ? "master" : "main") : reference[(at + 1)..];
        if (!RepoPattern().IsMatch(repo) || revision.Length == 0 || revision.Contains("..", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{reference}' is not a repository reference: expected OWNER/NAME[@REVISION]");
        }

        return (repo, revision);
    }

    private HttpRequestMessage Request(HttpMethod method, string relative)
    {
        var request = new HttpRequestMessage(method, new Uri(Endpoint, relative));
        if (!string.IsNullOrEmpty(token))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    private static string Escape(string path) => string.Join('/', path.Split('/').Select(Uri.EscapeDataString));

    public async Task<HubListing> ListAsync(string repo, string revision, CancellationToken ct)
    {
        return Layout == HubLayout.ModelScope ? await ListModelScopeAsync(repo, revision, ct) : await ListHuggingFaceAsync(repo, revision, ct);
    }

    private async Task<HubListing> ListHuggingFaceAsync(string repo, string revision, CancellationToken ct)
    {
        // Resolve the revision to a commit first so every file comes from the same snapshot.
        string commit;
        using (var info = await GetJsonAsync($"api/models/{repo}/revision/{Uri.EscapeDataString(revision)}", repo, ct))
        {
            commit = info.RootElement.TryGetProperty("sha", out var sha) && sha.GetString() is { Length: > 0 } s ? s : revision;
        }

        var files = new List<HubFile>();
        string? next = $"api/models/{repo}/tree/{Uri.EscapeDataString(commit)}?recursive=true";
        while (next is not null)
        {
            using var request = Request(HttpMethod.Get, next);
            using var response = await http.SendAsync(request, ct);
            await EnsureOkAsync(response, repo, ct);
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStreamAsync(ct));
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (e.GetProperty("type").GetString() != "file")
                {
                    continue;
                }

                var path = ModelStore.SafeRelativePath(e.GetProperty("path").GetString()!);
                string? sha256 = null;
                var size = e.GetProperty("size").GetInt64();
                if (e.TryGetProperty("lfs", out var lfs) && lfs.ValueKind == JsonValueKind.Object)
                {
                    sha256 = lfs.GetProperty("oid").GetString();
                    size = lfs.TryGetProperty("size", out var ls) ? ls.GetInt64() : size;
                }

                var oid = sha256 is null && e.TryGetProperty("oid", out var o) ? o.GetString() : null;
                files.Add(new HubFile(path, size, sha256, oid));
            }

            // The hub pages large trees with an RFC 8288 Link header.
            next = null;
            if (response.Headers.TryGetValues("Link", out var links))
            {
                var m = NextLink().Match(string.Join(',', links));
                if (m.Success)
                {
                    next = m.Groups[1].Value;
                }
            }
        }

        return new HubListing(repo, revision, commit, files);
    }

    [GeneratedRegex("<([^>]+)>;\\s*rel=\"next\"")]
    private static partial Regex NextLink();

    private async Task<HubListing> ListModelScopeAsync(string repo, string revision, CancellationToken ct)
    {
        using var doc = await GetJsonAsync($"api/v1/models/{repo}/repo/files?Revision={Uri.EscapeDataString(revision)}&Recursive=true", repo, ct);
        var data = doc.RootElement.GetProperty("Data");
        var files = new List<HubFile>();
        foreach (var e in data.GetProperty("Files").EnumerateArray())
        {
            if (e.GetProperty("Type").GetString() != "blob")
            {
                continue;
            }

            var sha = e.TryGetProperty("Sha256", out var s) && s.ValueKind == JsonValueKind.String && s.GetString()!.Length == 64 ? s.GetString() : null;
            files.Add(new HubFile(ModelStore.SafeRelativePath(e.GetProperty("Path").GetString()!), e.GetProperty("Size").GetInt64(), sha, null));
        }

        return new HubListing(repo, revision, revision, files);
    }

    private async Task<JsonDocument> GetJsonAsync(string relative, string repo, CancellationToken ct)
    {
        using var request = Request(HttpMethod.Get, relative);
        using var response = await http.SendAsync(request, ct);
        await EnsureOkAsync(response, repo, ct);
        try
        {
            return JsonDocument.Parse(await response.Content.ReadAsStreamAsync(ct));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{new Uri(Endpoint, relative)}: the hub answered with something that is not JSON ({e.Message})", e);
        }
    }

    private async Task EnsureOkAsync(HttpResponseMessage response, string repo, CancellationToken ct)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var body = await response.Content.ReadAsStringAsync(ct);
        var hint = response.StatusCode switch
        {
            HttpStatusCode.NotFound => "repository or revision not found",
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => "access denied (gated or private repository: set HF_TOKEN)",
            _ => body.Length > 200 ? body[..200] : body,
        };
        throw new IOException($"{Endpoint}: {repo}: HTTP {(int)response.StatusCode} ({hint})");
    }

    private string DownloadPath(HubListing listing, string path) => Layout == HubLayout.ModelScope
        ? $"api/v1/models/{listing.Repo}/repo?Revision={Uri.EscapeDataString(listing.Commit)}&FilePath={Uri.EscapeDataString(path)}"
        : $"{listing.Repo}/resolve/{Uri.EscapeDataString(listing.Commit)}/{Escape(path)}";

    /// <summary>The listed files that match the allow patterns (all files when none are given).</summary>
    public static IReadOnlyList<HubFile> Select(IReadOnlyList<HubFile> files, IReadOnlyList<string> include)
    {
        if (include.Count == 0)
        {
            return files;
        }

        var matcher = new Matcher(StringComparison.Ordinal);
        foreach (var pattern in include)
        {
            // A bare pattern like "*.json" matches at any depth, as huggingface_hub's allow_patterns do.
            matcher.AddInclude(pattern.Contains('/', StringComparison.Ordinal) ? pattern : "**/" + pattern);
        }

        return [.. files.Where(f => matcher.Match(f.Path).HasMatches)];
    }

    /// <summary>
    /// Downloads <paramref name="files"/> into <paramref name="staging"/>. Partial files (<c>PATH.part</c>) survive a
    /// failure and the next attempt continues from their length. A file whose hash does not match is deleted and the
    /// whole pull fails with <see cref="ModelIntegrityException"/> naming it.
    /// </summary>
    public async Task DownloadAsync(HubListing listing, IReadOnlyList<HubFile> files, string staging, PullOptions options, CancellationToken ct)
    {
        Directory.CreateDirectory(staging);
        await Parallel.ForEachAsync(files, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Parallelism), CancellationToken = ct },
            async (file, token) => await DownloadFileAsync(listing, file, staging, options, token));
    }

    private async Task DownloadFileAsync(HubListing listing, HubFile file, string staging, PullOptions options, CancellationToken ct)
    {
        var final = System.IO.Path.Combine(staging, file.Path);
        var part = final + ".part";
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(final)!);
        if (File.Exists(final) && new FileInfo(final).Length == file.Size)
        {
            options.Progress?.Report(new PullProgress(file.Path, file.Size, file.Size, true));
            return; // verified by an earlier attempt
        }

        for (var attempt = 1; ; attempt++)
        {
            var offset = File.Exists(part) ? new FileInfo(part).Length : 0;
            if (offset > file.Size)
            {
                File.Delete(part);
                offset = 0;
            }

            if (offset == file.Size && offset > 0)
            {
                break;
            }

            try
            {
                using var request = Request(HttpMethod.Get, DownloadPath(listing, file.Path));
                if (offset > 0)
                {
                    request.Headers.Range = new RangeHeaderValue(offset, null);
                }

                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
                if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && offset == file.Size)
                {
                    break;
                }

                await EnsureOkAsync(response, listing.Repo, ct);
                // 200 to a ranged request means the server ignored the range: start over.
                var append = offset > 0 && response.StatusCode == HttpStatusCode.PartialContent;
                if (!append)
                {
                    offset = 0;
                }

                await using var source = await response.Content.ReadAsStreamAsync(ct);
                await using var target = new FileStream(part, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
                var buffer = new byte[1 << 16];
                int read;
                var done = offset;
                while ((read = await source.ReadAsync(buffer, ct)) > 0)
                {
                    await target.WriteAsync(buffer.AsMemory(0, read), ct);
                    done += read;
                    options.Progress?.Report(new PullProgress(file.Path, done, file.Size, false));
                }

                await target.FlushAsync(ct);
                if (done < file.Size)
                {
                    throw new IOException($"{file.Path}: connection ended at byte {done} of {file.Size}");
                }

                break;
            }
            catch (Exception e) when (e is IOException or HttpRequestException && !ct.IsCancellationRequested && attempt < options.MaxAttempts)
            {
                // Dropped connection or short read: keep the .part file and continue from its length.
                await Task.Delay(options.RetryDelay * attempt, ct);
            }
        }

        Verify(file, part);
        File.Move(part, final, overwrite: true);
        options.Progress?.Report(new PullProgress(file.Path, file.Size, file.Size, true));
    }

    private static void Verify(HubFile file, string part)
    {
        var size = new FileInfo(part).Length;
        string? problem = null;
        if (size != file.Size)
        {
            problem = $"{size} bytes received, the hub lists {file.Size}";
        }
        else if (file.Sha256 is { } expected)
        {
            var actual = ModelStore.Sha256Of(part);
            if (!string.Equals(actual, expected, StringComparison.OrdinalIgnoreCase))
            {
                problem = $"SHA-256 {actual} does not match the hub's {expected}";
            }
        }
        else if (file.GitBlobSha1 is { Length: 40 } oid)
        {
            var actual = GitBlobSha1(part);
            if (!string.Equals(actual, oid, StringComparison.OrdinalIgnoreCase))
            {
                problem = $"git blob SHA-1 {actual} does not match the hub's {oid}";
            }
        }

        if (problem is not null)
        {
            File.Delete(part);
            throw new ModelIntegrityException($"{file.Path}: verification failed: {problem}; the download is corrupt and nothing was installed");
        }
    }

    /// <summary>Git's object id for a file: SHA-1 over "blob SIZE\0" and the content (what the hub lists for non-LFS files).</summary>
    public static string GitBlobSha1(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        sha.AppendData(Encoding.ASCII.GetBytes($"blob {new FileInfo(path).Length}\0"));
        using var stream = File.OpenRead(path);
        var buffer = new byte[1 << 16];
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            sha.AppendData(buffer, 0, read);
        }

        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}
