namespace Enclave.Operations.Registry;

/// <summary>Lists, downloads, verifies and installs one repository revision into the store.</summary>
public sealed class ModelPuller(ModelStore store, HubClient hub)
{
    /// <summary>
    /// Pulls <paramref name="reference"/> (<c>OWNER/NAME[@REVISION]</c>) as <paramref name="name"/> (default: NAME).
    /// Downloads land in a staging directory that survives connection failures (the next pull resumes) and is moved into
    /// place only when every file verified; a verification failure removes the staging directory.
    /// </summary>
    public async Task<ModelRecord> PullAsync(string reference, string? name, PullOptions options, CancellationToken ct)
    {
        var (repo, revision) = HubClient.ParseReference(reference, hub.Layout);
        name = ModelStore.ValidateName(name ?? repo[(repo.IndexOf('/', StringComparison.Ordinal) + 1)..]);
        if (store.Exists(name))
        {
            throw new ArgumentException($"model '{name}' is already installed; remove it first with 'enclave models rm {name}' or pass --name");
        }

        var listing = await hub.ListAsync(repo, revision, ct);
        var selected = HubClient.Select(listing.Files, options.Include);
        if (selected.Count == 0)
        {
            throw new ArgumentException(options.Include.Count > 0
                ? $"{repo}@{revision}: no file matches --include {string.Join(' ', options.Include)} ({listing.Files.Count} files listed)"
                : $"{repo}@{revision}: the repository lists no files");
        }

        var staging = store.StagingPath(name);
        try
        {
            await hub.DownloadAsync(listing, selected, staging, options, ct);
        }
        catch (ModelIntegrityException)
        {
            Directory.Delete(staging, recursive: true);
            throw;
        }

        // Anything in staging that is not part of this selection (an earlier pull with other patterns) is dropped.
        var wanted = new HashSet<string>(selected.Select(f => f.Path), StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(staging, "*", SearchOption.AllDirectories).ToList())
        {
            if (!wanted.Contains(Path.GetRelativePath(staging, file).Replace('\\', '/')))
            {
                File.Delete(file);
            }
        }

        var record = ModelStore.WriteRecord(staging, new ModelRecord
        {
            Name = name,
            Source = hub.Endpoint.ToString(),
            Repo = repo,
            Revision = revision,
            Commit = listing.Commit,
            InstalledAt = DateTimeOffset.UtcNow,
            Files = [],
        });
        store.InstallFromStaging(staging, name);
        return record;
    }
}
