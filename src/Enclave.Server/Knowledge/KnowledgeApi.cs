using System.Globalization;
using System.Text.Json.Nodes;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Knowledge;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Store;
using Enclave.Server.Api;
using Enclave.Server.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Knowledge;

/// <summary>
/// <c>/v1/kb/*</c>: collections, document upload (multipart) with background ingestion jobs, deletion and search.
/// Endpoint permissions come from the gateway (kb.read / kb.write / kb.manage); which collections a caller sees is
/// decided by each collection's access list inside <see cref="KnowledgeBase"/>.
/// </summary>
public sealed class KnowledgeApi(KnowledgeService service, ServerOptions options, ILogger logger)
{
    public void Map(WebApplication app)
    {
        app.MapGet("/v1/kb/collections", ctx => Handle(ctx, ListCollections)).RequirePermission(Permissions.KbRead);
        app.MapPost("/v1/kb/collections", ctx => Handle(ctx, CreateCollection)).RequirePermission(Permissions.KbManage);
        app.MapGet("/v1/kb/collections/{name}", ctx => Handle(ctx, GetCollection)).RequirePermission(Permissions.KbRead);
        app.MapDelete("/v1/kb/collections/{name}", ctx => Handle(ctx, DeleteCollection)).RequirePermission(Permissions.KbManage);
        app.MapPut("/v1/kb/collections/{name}/access", ctx => Handle(ctx, SetAccess)).RequirePermission(Permissions.KbManage);
        app.MapGet("/v1/kb/{collection}/documents", ctx => Handle(ctx, ListDocuments)).RequirePermission(Permissions.KbRead);
        app.MapPost("/v1/kb/{collection}/documents", ctx => Handle(ctx, Upload)).RequirePermission(Permissions.KbWrite);
        app.MapDelete("/v1/kb/{collection}/documents/{**document}", ctx => Handle(ctx, DeleteDocument)).RequirePermission(Permissions.KbWrite);
        app.MapPost("/v1/kb/{collection}/search", ctx => Handle(ctx, Search)).RequirePermission(Permissions.KbRead);
        app.MapGet("/v1/kb/jobs/{id}", ctx => Handle(ctx, GetJob)).RequirePermission(Permissions.KbRead);
    }

    private Task Handle(HttpContext ctx, Func<HttpContext, Task> handler) =>
        ApiHandler.RunAsync(ctx, handler, ToApiError, logger, "knowledge request");

    public static ApiException ToApiError(Exception e) => e switch
    {
        KnowledgeException k => new ApiException(k.Status, k.Message, null, k.Code),
        DocumentFormatException d => new ApiException(400, d.Message, "file", "invalid_document"),
        InvalidDataException or FormatException when e.Message.Contains("multipart", StringComparison.OrdinalIgnoreCase) => new ApiException(400, $"the upload is not valid multipart/form-data: {e.Message}", "file"),
        _ => OpenAiApi.ToApiError(e),
    };

    private static string Route(HttpContext ctx, string name) => Uri.UnescapeDataString(ctx.Request.RouteValues[name]?.ToString() ?? "");

    private static async Task<JsonRequest> ReadJsonAsync(HttpContext ctx, long limit)
    {
        if (ctx.Request.ContentLength > limit)
        {
            throw new ApiException(413, $"the request body is larger than the {limit} bytes this server accepts", null, "request_too_large");
        }

        using var buffer = new MemoryStream();
        await ctx.Request.Body.CopyToAsync(buffer, ctx.RequestAborted);
        return JsonRequest.Parse(buffer.GetBuffer().AsMemory(0, (int)buffer.Length));
    }

    private static Task WriteJson(HttpContext ctx, JsonNode body, int status = 200)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted);
    }

    private static List<string> Strings(JsonRequest r, string name) => r.StringOrStrings(name)?.ToList() ?? [];

    private async Task<JsonObject> CollectionJson(KnowledgeBase kb, KnowledgeCollection c)
    {
        var (documents, chunks) = await kb.CountsAsync(c.Id);
        return new JsonObject
        {
            ["object"] = "kb.collection",
            ["name"] = c.Name,
            ["description"] = c.Description,
            ["owner"] = c.Owner,
            ["embedding_model"] = c.EmbeddingModel,
            ["chunk_tokens"] = c.ChunkTokens,
            ["chunk_overlap"] = c.ChunkOverlap,
            ["pii_policy"] = c.PiiPolicy,
            ["encryption"] = c.Encryption,
            ["readers"] = new JsonArray([.. c.Access.Where(a => !a.CanWrite).Select(a => (JsonNode)a.Principal)]),
            ["writers"] = new JsonArray([.. c.Access.Where(a => a.CanWrite).Select(a => (JsonNode)a.Principal)]),
            ["documents"] = documents,
            ["chunks"] = chunks,
            ["created_at"] = new DateTimeOffset(DateTime.SpecifyKind(c.CreatedUtc, DateTimeKind.Utc)).ToUnixTimeSeconds(),
        };
    }

    private async Task ListCollections(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        var data = new JsonArray();
        foreach (var c in await kb.ListCollectionsAsync(KnowledgeService.Caller(ctx), ctx.RequestAborted))
        {
            data.Add((JsonNode)await CollectionJson(kb, c));
        }

        await WriteJson(ctx, new JsonObject { ["object"] = "list", ["data"] = data });
    }

    private async Task CreateCollection(HttpContext ctx)
    {
        var r = await ReadJsonAsync(ctx, options.MaxRequestBodyBytes);
        var kb = await service.GetAsync();
        var caller = KnowledgeService.Caller(ctx);
        var c = await kb.CreateCollectionAsync(new CollectionSpec(r.String("name", required: true)!)
        {
            Description = r.String("description") ?? "",
            EmbeddingModel = r.String("embedding_model"),
            ChunkTokens = (int)(r.Integer("chunk_tokens", 16, 8192) ?? 256),
            ChunkOverlap = (int)(r.Integer("chunk_overlap", 0, 4096) ?? 32),
            PiiPolicy = r.String("pii_policy") ?? PiiPolicies.Mask,
            Encryption = r.String("encryption"),
            Readers = Strings(r, "readers"),
            Writers = Strings(r, "writers"),
        }, caller?.User ?? "admin", ctx.RequestAborted);
        await WriteJson(ctx, await CollectionJson(kb, c), 201);
    }

    private async Task GetCollection(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        await WriteJson(ctx, await CollectionJson(kb, await kb.GetCollectionAsync(Route(ctx, "name"), KnowledgeService.Caller(ctx), ctx.RequestAborted)));
    }

    private async Task DeleteCollection(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        var name = Route(ctx, "name");
        await kb.DeleteCollectionAsync(name, KnowledgeService.Caller(ctx), ctx.RequestAborted);
        await WriteJson(ctx, new JsonObject { ["object"] = "kb.collection.deleted", ["name"] = name, ["deleted"] = true });
    }

    private async Task SetAccess(HttpContext ctx)
    {
        var r = await ReadJsonAsync(ctx, options.MaxRequestBodyBytes);
        var kb = await service.GetAsync();
        var name = Route(ctx, "name");
        await kb.SetAccessAsync(name, Strings(r, "readers"), Strings(r, "writers"), KnowledgeService.Caller(ctx), ctx.RequestAborted);
        await WriteJson(ctx, await CollectionJson(kb, await kb.GetCollectionAsync(name, KnowledgeService.Caller(ctx), ctx.RequestAborted)));
    }

    private async Task ListDocuments(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        var docs = await kb.ListDocumentsAsync(Route(ctx, "collection"), KnowledgeService.Caller(ctx), ctx.RequestAborted);
        await WriteJson(ctx, new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray([.. docs.Select(d => (JsonNode)new JsonObject
            {
                ["object"] = "kb.document",
                ["document"] = d.Source,
                ["title"] = d.Title,
                ["status"] = d.Status,
                ["error"] = d.Error,
                ["pages"] = d.PageCount,
                ["sha256"] = d.ContentHash,
                ["metadata"] = JsonNode.Parse(d.MetadataJson),
            })]),
        });
    }

    /// <summary>multipart/form-data with one or more <c>file</c> parts; answers 202 with the job (or a list of jobs).</summary>
    private async Task Upload(HttpContext ctx)
    {
        if (!ctx.Request.HasFormContentType)
        {
            throw new ApiException(400, "upload documents as multipart/form-data with one or more 'file' parts", "file");
        }

        var form = await ctx.Request.ReadFormAsync(ctx.RequestAborted);
        if (form.Files.Count == 0)
        {
            throw new ApiException(400, "the form has no file: send the document in a 'file' part", "file");
        }

        var kb = await service.GetAsync();
        var collection = Route(ctx, "collection");
        var caller = KnowledgeService.Caller(ctx);
        var jobs = new JsonArray();
        foreach (var file in form.Files)
        {
            var name = form.Files.Count == 1 && form.TryGetValue("document", out var given) && given.ToString().Length > 0 ? given.ToString() : file.FileName;
            using var buffer = new MemoryStream();
            await file.CopyToAsync(buffer, ctx.RequestAborted);
            var job = await kb.SubmitAsync(collection, name, buffer.ToArray(), caller, ctx.RequestAborted);
            if (job.Status == JobStatus.Queued)
            {
                service.Enqueue(job.Id);
            }

            jobs.Add((JsonNode)JobJson(job, collection));
        }

        await WriteJson(ctx, jobs.Count == 1 ? jobs[0]!.DeepClone() : new JsonObject { ["object"] = "list", ["data"] = jobs }, 202);
    }

    private async Task DeleteDocument(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        var collection = Route(ctx, "collection");
        var document = Route(ctx, "document");
        await kb.DeleteDocumentAsync(collection, document, KnowledgeService.Caller(ctx), ctx.RequestAborted);
        await WriteJson(ctx, new JsonObject { ["object"] = "kb.document.deleted", ["document"] = document, ["deleted"] = true });
    }

    private async Task GetJob(HttpContext ctx)
    {
        var kb = await service.GetAsync();
        var job = await kb.GetJobAsync(Route(ctx, "id"), KnowledgeService.Caller(ctx), ctx.RequestAborted);
        var name = (await kb.ListCollectionsAsync(KnowledgeService.Caller(ctx), ctx.RequestAborted)).FirstOrDefault(c => c.Id == job.CollectionId)?.Name ?? "";
        await WriteJson(ctx, JobJson(job, name));
    }

    public static JsonObject JobJson(IngestJob job, string collection) => new()
    {
        ["id"] = job.Id,
        ["object"] = "kb.job",
        ["collection"] = collection,
        ["document"] = job.Source,
        ["status"] = job.Status,
        ["stage"] = job.Stage,
        ["chunks"] = job.Chunks,
        ["notes"] = job.Notes,
        ["error"] = job.Error,
        ["created_at"] = new DateTimeOffset(DateTime.SpecifyKind(job.CreatedUtc, DateTimeKind.Utc)).ToUnixTimeSeconds(),
    };

    private async Task Search(HttpContext ctx)
    {
        var r = await ReadJsonAsync(ctx, options.MaxRequestBodyBytes);
        var kb = await service.GetAsync();
        var request = ReadSearch(r, r.String("query", required: true)!);
        var hits = await kb.SearchAsync(Route(ctx, "collection"), request, KnowledgeService.Caller(ctx), ctx.RequestAborted);
        await WriteJson(ctx, new JsonObject { ["object"] = "list", ["data"] = new JsonArray([.. hits.Select((h, i) => (JsonNode)HitJson(h, i + 1))]) });
    }

    internal static SearchRequest ReadSearch(JsonRequest r, string query)
    {
        Dictionary<string, string>? filter = null;
        if (r.Object("filter") is { } f)
        {
            filter = [];
            foreach (var (key, value) in f)
            {
                filter[key] = value is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String
                    ? v.GetValue<string>()
                    : throw ApiException.BadParam($"filter.{key}", $"'filter.{key}' must be a string");
            }
        }

        RetrievalMode mode;
        try
        {
            mode = SearchRequest.ParseMode(r.String("mode"));
        }
        catch (ArgumentException e)
        {
            throw ApiException.BadParam("mode", e.Message.Replace(" (Parameter 'mode')", "", StringComparison.Ordinal));
        }

        return new SearchRequest(query)
        {
            TopK = (int)(r.Integer("top_k", 1, 100) ?? 5),
            Mode = mode,
            Rerank = r.Bool("rerank") ?? false,
            MinScore = r.Number("min_score", double.MinValue, double.MaxValue) is { } s ? (float)s : null,
            Metadata = filter,
        };
    }

    /// <summary>One retrieved passage with its citation; <paramref name="index"/> is the [n] the grounded prompt uses.</summary>
    public static JsonObject HitJson(SearchHit h, int index) => new()
    {
        ["index"] = index,
        ["score"] = Math.Round(h.Score, 6),
        ["collection"] = h.Citation.Collection,
        ["document"] = h.Citation.Document,
        ["title"] = h.Citation.Title,
        ["page"] = h.Citation.Page,
        ["heading"] = h.Citation.Heading,
        ["chunk_id"] = h.Citation.ChunkId,
        ["char_start"] = h.Citation.CharStart,
        ["char_end"] = h.Citation.CharEnd,
        ["text"] = h.Citation.Text,
    };

    /// <summary>The numbered passages a grounded prompt quotes.</summary>
    public static string Context(IReadOnlyList<SearchHit> hits) => string.Join("\n\n", hits.Select((h, i) =>
    {
        var where = h.Citation.Document + (h.Citation.Page is { } p ? string.Create(CultureInfo.InvariantCulture, $", p. {p}") : "")
                    + (h.Citation.Heading.Length > 0 ? ", " + h.Citation.Heading : "");
        return string.Create(CultureInfo.InvariantCulture, $"[{i + 1}] ({where})\n{h.Citation.Text}");
    }));
}
