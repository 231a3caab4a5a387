using Enclave.Knowledge.Retrieval;
using Enclave.Server.Hosting;

namespace Enclave.Server.Knowledge;

/// <summary>Knowledge-base reranking through a cross-encoder the server already serves (the first --rerank-model).</summary>
internal sealed class CatalogReranker(ModelCatalog catalog, string name) : IReranker
{
    public static IReranker? For(ModelCatalog catalog, ServerOptions options) =>
        options.RerankModels.Count > 0 ? new CatalogReranker(catalog, options.RerankModels[0].Name) : null;

    public Task<IReadOnlyList<float>> ScoreAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellationToken) =>
        catalog.ResolveReranker(name).ScoreAsync(query, passages, cancellationToken);
}
