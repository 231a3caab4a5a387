using System.Globalization;
using System.Text.Json;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Search;
using Enclave.Knowledge.Tests.Support;
using Xunit.Abstractions;

namespace Enclave.Knowledge.Tests;

/// <summary>
/// BM25 quality on the committed labelled set (Data/retrieval: 40 zh/en policy documents, 123 questions each labelled
/// with the document and section that answers it). A hit is a returned chunk from that document under that heading.
/// </summary>
public sealed class RetrievalEvaluationTests(ITestOutputHelper output)
{
    private sealed record Question(string Id, string Lang, string Text, string Document, string Heading);

    public sealed record Scores(string Analyzer, double RecallAt5, double Mrr, double RecallAt5Zh, double RecallAt5En, int Questions, IReadOnlyList<string> Missed);

    private static List<Question> Questions()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Data", "retrieval", "retrieval-questions.jsonl");
        return [.. File.ReadLines(path).Where(l => l.Length > 0).Select(l =>
        {
            using var d = JsonDocument.Parse(l);
            var r = d.RootElement;
            return new Question(r.GetProperty("id").GetString()!, r.GetProperty("lang").GetString()!, r.GetProperty("question").GetString()!,
                r.GetProperty("document").GetString()!, r.GetProperty("heading").GetString()!);
        })];
    }

    internal static async Task<Scores> EvaluateAsync(string analyzer)
    {
        using var dir = new TempDir();
        await using var kb = await KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = dir.Path, Bm25Analyzer = analyzer });
        await kb.CreateCollectionAsync(new CollectionSpec("eval"), "eval");
        var corpus = Path.Combine(AppContext.BaseDirectory, "Data", "retrieval", "corpus");
        foreach (var file in Directory.GetFiles(corpus, "*.md").Order(StringComparer.Ordinal))
        {
            var job = await kb.IngestAsync("eval", Path.GetFileName(file), await File.ReadAllBytesAsync(file), null);
            Assert.Equal(Store.JobStatus.Succeeded, job.Status);
        }

        var questions = Questions();
        double hits5 = 0, reciprocal = 0, zhHits = 0, enHits = 0;
        var missed = new List<string>();
        foreach (var q in questions)
        {
            var results = await kb.SearchAsync("eval", new SearchRequest(q.Text) { Mode = RetrievalMode.Bm25, TopK = 10 }, null);
            var rank = results.Select((h, i) => (h, i)).FirstOrDefault(x => x.h.Citation.Document == q.Document && x.h.Citation.Heading == q.Heading).i + 1;
            if (results.Count == 0 || !results.Any(h => h.Citation.Document == q.Document && h.Citation.Heading == q.Heading))
            {
                rank = 0;
            }

            if (rank is > 0 and <= 5)
            {
                hits5++;
                if (q.Lang == "zh")
                {
                    zhHits++;
                }
                else
                {
                    enHits++;
                }
            }

            else
            {
                missed.Add($"{q.Id} {q.Text}");
            }

            reciprocal += rank > 0 ? 1.0 / rank : 0;
        }

        var zh = questions.Count(q => q.Lang == "zh");
        return new Scores(analyzer, hits5 / questions.Count, reciprocal / questions.Count, zhHits / zh, enHits / (questions.Count - zh), questions.Count, missed);
    }

    [Fact]
    public void The_labelled_set_has_at_least_100_questions_in_both_languages_over_30_to_60_documents()
    {
        var questions = Questions();
        Assert.True(questions.Count >= 100);
        Assert.True(questions.Count(q => q.Lang == "zh") >= 40);
        Assert.True(questions.Count(q => q.Lang == "en") >= 40);
        var docs = Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Data", "retrieval", "corpus"), "*.md");
        Assert.InRange(docs.Length, 30, 60);
        Assert.All(questions, q => Assert.Contains(docs, d => Path.GetFileName(d) == q.Document));
        Assert.Equal(questions.Count, questions.Select(q => q.Id).Distinct().Count());
    }

    [Fact]
    public async Task Bm25_recall_and_mrr_on_the_labelled_set_and_the_default_analyzer_is_the_best_measured()
    {
        var scores = new List<Scores>();
        foreach (var analyzer in Bm25Analyzers.All)
        {
            var s = await EvaluateAsync(analyzer);
            scores.Add(s);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {s.Analyzer} | {s.RecallAt5:0.000} | {s.Mrr:0.000} | {s.RecallAt5Zh:0.000} | {s.RecallAt5En:0.000} | missed: {string.Join("; ", s.Missed)}"));
        }

        var chosen = scores.Single(s => s.Analyzer == Bm25Analyzers.Default);
        Assert.True(chosen.RecallAt5 >= 0.85, $"recall@5 {chosen.RecallAt5:0.000} fell below 0.85");
        Assert.True(chosen.Mrr >= 0.7, $"MRR {chosen.Mrr:0.000} fell below 0.7");
        var best = scores.OrderByDescending(s => s.RecallAt5).ThenByDescending(s => s.Mrr).First();
        Assert.True(best.Analyzer == chosen.Analyzer || (best.RecallAt5 == chosen.RecallAt5 && best.Mrr == chosen.Mrr),
            $"{best.Analyzer} scores better than the default {chosen.Analyzer}");
    }
}
