using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Store;
using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Cli;

/// <summary>
/// <c>enclave kb</c>: create, fill, list, remove and search knowledge collections in <c>ENCLAVE_HOME/knowledge</c>
/// (the data directory <c>enclave serve</c> uses). The command acts as the local operator: access lists apply to
/// API callers, not to someone holding the data directory.
/// </summary>
public static class KbCommand
{
    private static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The command tree; the vector index and embedding models are supplied by the host build.</summary>
    public static Command Create(IVectorIndexFactory? vectors = null, IEmbeddingModelProvider? embeddings = null, IReranker? reranker = null)
    {
        var kb = new Command("kb", "Knowledge collections: ingest documents and search them with citations");
        var dirOption = new Option<string?>("--dir") { Description = "Knowledge data directory (default: ENCLAVE_HOME/knowledge)", Recursive = true };
        kb.Options.Add(dirOption);
        Task<KnowledgeBase> Open(ParseResult pr, CancellationToken ct) =>
            KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = pr.GetValue(dirOption) }, vectors, embeddings, reranker, ct: ct);

        kb.Subcommands.Add(CreateCommand(Open));
        kb.Subcommands.Add(AddCommand(Open));
        kb.Subcommands.Add(ListCommand(Open));
        kb.Subcommands.Add(RemoveCommand(Open));
        kb.Subcommands.Add(SearchCommand(Open));
        return kb;
    }

    private static async Task<int> Guard(ParseResult pr, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (e is KnowledgeException or DocumentFormatException or IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException)
        {
            await pr.InvocationConfiguration.Error.WriteLineAsync("enclave kb: " + e.Message);
            return e is KnowledgeException { Status: 404 } ? 3 : 2;
        }
    }

    private static Command CreateCommand(Func<ParseResult, CancellationToken, Task<KnowledgeBase>> open)
    {
        var name = new Argument<string>("name") { Description = "Collection name (letters, digits, '_', '-', '.')" };
        var model = new Option<string?>("--embedding-model") { Description = "Embedding model directory (Hugging Face layout); chunks are measured with its tokenizer and embedded for dense search" };
        var description = new Option<string?>("--description") { Description = "What the collection holds" };
        var chunkTokens = new Option<int>("--chunk-tokens") { Description = "Token budget of one chunk", DefaultValueFactory = _ => 256 };
        var overlap = new Option<int>("--chunk-overlap") { Description = "Tokens repeated between consecutive chunks of a section", DefaultValueFactory = _ => 32 };
        var pii = new Option<string>("--pii") { Description = "Personal data in documents: keep, mask (default) or drop the document", DefaultValueFactory = _ => PiiPolicies.Mask };
        var encrypt = new Option<string?>("--encrypt") { Description = "Seal stored documents and chunk text: aes-256-gcm or sm4-gcm" };
        var readers = new Option<string[]>("--reader") { Description = "user:NAME or role:NAME allowed to search (repeatable)" };
        var writers = new Option<string[]>("--writer") { Description = "user:NAME or role:NAME allowed to add and delete documents (repeatable)" };
        var owner = new Option<string>("--owner") { Description = "Gateway user who owns the collection", DefaultValueFactory = _ => "admin" };
        var command = new Command("create", "Create a collection") { name, model, description, chunkTokens, overlap, pii, encrypt, readers, writers, owner };
        command.SetAction((pr, ct) => Guard(pr, async () =>
        {
            await using var kb = await open(pr, ct);
            var c = await kb.CreateCollectionAsync(new CollectionSpec(pr.GetValue(name)!)
            {
                EmbeddingModel = pr.GetValue(model),
                Description = pr.GetValue(description) ?? "",
                ChunkTokens = pr.GetValue(chunkTokens),
                ChunkOverlap = pr.GetValue(overlap),
                PiiPolicy = pr.GetValue(pii)!,
                Encryption = pr.GetValue(encrypt),
                Readers = pr.GetValue(readers) ?? [],
                Writers = pr.GetValue(writers) ?? [],
            }, pr.GetValue(owner)!, ct);
            await pr.InvocationConfiguration.Output.WriteLineAsync($"created collection {c.Name}");
            return 0;
        }));
        return command;
    }

    private static Command AddCommand(Func<ParseResult, CancellationToken, Task<KnowledgeBase>> open)
    {
        var name = new Argument<string>("name") { Description = "Collection" };
        var paths = new Argument<string[]>("path") { Description = "Files or folders (searched recursively for supported types)", Arity = ArgumentArity.OneOrMore };
        var command = new Command("add", "Ingest files into a collection; unchanged files are skipped, changed ones replaced") { name, paths };
        command.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var files = new List<(string Path, string Source)>();
            foreach (var p in pr.GetValue(paths)!)
            {
                if (Directory.Exists(p))
                {
                    var root = Path.GetFullPath(p);
                    var baseName = Path.GetFileName(Path.TrimEndingDirectorySeparator(root));
                    foreach (var f in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Where(DocumentExtractor.IsSupported).Order(StringComparer.Ordinal))
                    {
                        files.Add((f, baseName + "/" + Path.GetRelativePath(root, f).Replace('\\', '/')));
                    }
                }
                else if (File.Exists(p))
                {
                    files.Add((p, Path.GetFileName(p)));
                }
                else
                {
                    throw new FileNotFoundException($"{p}: no such file or folder");
                }
            }

            await using var kb = await open(pr, ct);
            _ = await kb.GetCollectionAsync(pr.GetValue(name)!, null, ct);
            var progress = new ProgressBar(pr.InvocationConfiguration.Error, files.Count);
            var failed = 0;
            var counts = new Dictionary<string, int>(StringComparer.Ordinal);
            for (var i = 0; i < files.Count; i++)
            {
                var (path, source) = files[i];
                progress.Show(i, source);
                var job = await kb.IngestAsync(pr.GetValue(name)!, source, await File.ReadAllBytesAsync(path, ct), null, ct);
                counts[job.Status] = counts.GetValueOrDefault(job.Status) + 1;
                var line = job.Status switch
                {
                    JobStatus.Succeeded => $"added {source} ({job.Chunks} chunks{(job.Notes.Length > 0 ? "; " + job.Notes : "")})",
                    JobStatus.Unchanged => $"unchanged {source}",
                    _ => $"failed {source}: {job.Error}",
                };
                failed += job.Status == JobStatus.Failed ? 1 : 0;
                progress.Clear();
                await pr.InvocationConfiguration.Output.WriteLineAsync(line);
            }

            progress.Show(files.Count, "done");
            progress.Finish();
            await pr.InvocationConfiguration.Output.WriteLineAsync(
                $"{counts.GetValueOrDefault(JobStatus.Succeeded)} added, {counts.GetValueOrDefault(JobStatus.Unchanged)} unchanged, {failed} failed");
            return failed > 0 ? 1 : 0;
        }));
        return command;
    }

    private static Command ListCommand(Func<ParseResult, CancellationToken, Task<KnowledgeBase>> open)
    {
        var name = new Argument<string?>("name") { Description = "List this collection's documents instead", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var command = new Command("list", "List collections, or the documents of one") { name, json };
        command.SetAction((pr, ct) => Guard(pr, async () =>
        {
            await using var kb = await open(pr, ct);
            var output = pr.InvocationConfiguration.Output;
            if (pr.GetValue(name) is { } collection)
            {
                var docs = await kb.ListDocumentsAsync(collection, null, ct);
                if (pr.GetValue(json))
                {
                    await output.WriteLineAsync(new JsonArray([.. docs.Select(d => (JsonNode)new JsonObject
                    {
                        ["document"] = d.Source, ["title"] = d.Title, ["status"] = d.Status, ["pages"] = d.PageCount, ["sha256"] = d.ContentHash,
                    })]).ToJsonString(Json));
                    return 0;
                }

                foreach (var d in docs)
                {
                    await output.WriteLineAsync($"{d.Source}\t{d.Status}\t{d.Title}");
                }

                return 0;
            }

            var all = await kb.ListCollectionsAsync(null, ct);
            var rows = new JsonArray();
            foreach (var c in all)
            {
                var (documents, chunks) = await kb.CountsAsync(c.Id, ct);
                rows.Add((JsonNode)new JsonObject
                {
                    ["name"] = c.Name, ["documents"] = documents, ["chunks"] = chunks, ["owner"] = c.Owner, ["embedding_model"] = c.EmbeddingModel,
                    ["pii"] = c.PiiPolicy, ["encryption"] = c.Encryption, ["description"] = c.Description,
                });
            }

            if (pr.GetValue(json))
            {
                await output.WriteLineAsync(rows.ToJsonString(Json));
                return 0;
            }

            await output.WriteLineAsync("NAME\tDOCUMENTS\tCHUNKS\tEMBEDDING\tDESCRIPTION");
            foreach (var r in rows)
            {
                await output.WriteLineAsync(string.Join('\t', r!["name"], r["documents"], r["chunks"], r["embedding_model"]?.ToString() ?? "-", r["description"]));
            }

            return 0;
        }));
        return command;
    }

    private static Command RemoveCommand(Func<ParseResult, CancellationToken, Task<KnowledgeBase>> open)
    {
        var name = new Argument<string>("name") { Description = "Collection" };
        var doc = new Argument<string?>("document") { Description = "Document to remove (as listed by 'kb list NAME'); without it the whole collection goes", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("rm", "Remove a document, or a whole collection with its indexes") { name, doc };
        command.SetAction((pr, ct) => Guard(pr, async () =>
        {
            await using var kb = await open(pr, ct);
            if (pr.GetValue(doc) is { } document)
            {
                await kb.DeleteDocumentAsync(pr.GetValue(name)!, document, null, ct);
                await pr.InvocationConfiguration.Output.WriteLineAsync($"removed {document} from {pr.GetValue(name)}");
            }
            else
            {
                await kb.DeleteCollectionAsync(pr.GetValue(name)!, null, ct);
                await pr.InvocationConfiguration.Output.WriteLineAsync($"removed collection {pr.GetValue(name)}");
            }

            return 0;
        }));
        return command;
    }

    private static Command SearchCommand(Func<ParseResult, CancellationToken, Task<KnowledgeBase>> open)
    {
        var name = new Argument<string>("name") { Description = "Collection" };
        var query = new Argument<string>("query") { Description = "What to look for" };
        var topK = new Option<int>("--top-k") { Description = "Passages to return", DefaultValueFactory = _ => 5 };
        var mode = new Option<string>("--mode") { Description = "bm25, dense, hybrid or auto (hybrid when the collection has an embedding model)", DefaultValueFactory = _ => "auto" };
        mode.AcceptOnlyFromAmong("auto", "bm25", "dense", "hybrid");
        var rerank = new Option<bool>("--rerank") { Description = "Rerank candidates with the configured cross-encoder" };
        var minScore = new Option<float?>("--min-score") { Description = "Drop passages scoring below this" };
        var json = new Option<bool>("--json") { Description = "Print a JSON list of {document, page, heading, text, score}" };
        var command = new Command("search", "Search a collection") { name, query, topK, mode, rerank, minScore, json };
        command.SetAction((pr, ct) => Guard(pr, async () =>
        {
            await using var kb = await open(pr, ct);
            var hits = await kb.SearchAsync(pr.GetValue(name)!, new SearchRequest(pr.GetValue(query)!)
            {
                TopK = pr.GetValue(topK),
                Mode = SearchRequest.ParseMode(pr.GetValue(mode)),
                Rerank = pr.GetValue(rerank),
                MinScore = pr.GetValue(minScore),
            }, null, ct);
            var output = pr.InvocationConfiguration.Output;
            if (pr.GetValue(json))
            {
                await output.WriteLineAsync(new JsonArray([.. hits.Select(h => (JsonNode)new JsonObject
                {
                    ["document"] = h.Citation.Document,
                    ["page"] = h.Citation.Page,
                    ["heading"] = h.Citation.Heading,
                    ["text"] = h.Citation.Text,
                    ["score"] = Math.Round(h.Score, 6),
                })]).ToJsonString(Json));
                return 0;
            }

            var rank = 1;
            foreach (var h in hits)
            {
                var where = h.Citation.Document + (h.Citation.Page is { } p ? $" p.{p}" : "") + (h.Citation.Heading.Length > 0 ? $" § {h.Citation.Heading}" : "");
                await output.WriteLineAsync($"{rank++}. [{h.Score.ToString("0.000", CultureInfo.InvariantCulture)}] {where}");
                await output.WriteLineAsync("   " + h.Citation.Text.ReplaceLineEndings(" "));
            }

            return 0;
        }));
        return command;
    }

    /// <summary>A one-line progress bar on stderr when it is a terminal; silent when redirected (the per-file lines say it all).</summary>
    private sealed class ProgressBar(TextWriter error, int total)
    {
        private readonly bool live = !Console.IsErrorRedirected && ReferenceEquals(error, Console.Error);

        public void Show(int done, string current)
        {
            if (!live || total == 0)
            {
                return;
            }

            const int Width = 30;
            var filled = done * Width / total;
            var label = current.Length > 40 ? "…" + current[^39..] : current;
            error.Write($"\r[{new string('#', filled)}{new string('-', Width - filled)}] {done}/{total} {label}".PadRight(Width + 60));
        }

        public void Clear()
        {
            if (live)
            {
                error.Write("\r" + new string(' ', 90) + "\r");
            }
        }

        public void Finish()
        {
            if (live)
            {
                error.WriteLine();
            }
        }
    }
}
