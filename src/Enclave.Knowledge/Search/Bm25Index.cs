using Lucene.Net.Analysis;
using Lucene.Net.Analysis.Cjk;
using Lucene.Net.Analysis.Core;
using Lucene.Net.Analysis.En;
using Lucene.Net.Analysis.Standard;
using Lucene.Net.Analysis.TokenAttributes;
using Lucene.Net.Documents;
using Lucene.Net.Index;
using Lucene.Net.Search;
using Lucene.Net.Search.Similarities;
using Lucene.Net.Store;
using Lucene.Net.Util;
using LuceneDirectory = Lucene.Net.Store.Directory;

namespace Enclave.Knowledge.Search;

/// <summary>
/// Text analysis for the BM25 index. Every variant uses Lucene's StandardTokenizer (UAX#29 word breaks: Latin words
/// whole, each Han character its own token), folds full/half width, lower-cases and Porter-stems English. They differ
/// in how Chinese is indexed; docs/knowledge.md has the measurement that chose the default.
/// </summary>
public static class Bm25Analyzers
{
    /// <summary>Single Han characters (what StandardAnalyzer does).</summary>
    public const string Unigram = "cjk-unigram";

    /// <summary>Overlapping Han bigrams (CJKAnalyzer's approach): "数据安全" → 数据 据安 安全.</summary>
    public const string Bigram = "cjk-bigram";

    /// <summary>Bigrams plus the single characters, so one-character words still match.</summary>
    public const string BigramUnigram = "cjk-bigram-unigram";

    /// <summary>The variant new collections use; chosen by the labelled retrieval set.</summary>
    public const string Default = BigramUnigram;

    public static IReadOnlyList<string> All { get; } = [Unigram, Bigram, BigramUnigram];

    public static Analyzer Create(string name) => name switch
    {
        Unigram => Build(bigrams: false, unigrams: true),
        Bigram => Build(bigrams: true, unigrams: false),
        BigramUnigram => Build(bigrams: true, unigrams: true),
        _ => throw new ArgumentException($"unknown BM25 analyzer '{name}' (known: {string.Join(", ", All)})", nameof(name)),
    };

    private static Analyzer Build(bool bigrams, bool unigrams) => Analyzer.NewAnonymous((_, reader) =>
    {
        var source = new StandardTokenizer(Bm25Index.Version, reader);
        TokenStream stream = new CJKWidthFilter(source);
        stream = new LowerCaseFilter(Bm25Index.Version, stream);
        if (bigrams)
        {
            stream = new CJKBigramFilter(stream, CJKScript.HAN | CJKScript.HIRAGANA | CJKScript.KATAKANA | CJKScript.HANGUL, unigrams);
        }

        stream = new StopFilter(Bm25Index.Version, stream, StopAnalyzer.ENGLISH_STOP_WORDS_SET);
        stream = new PorterStemFilter(stream);
        return new TokenStreamComponents(source, stream);
    });
}

/// <summary>One chunk as the BM25 index sees it. Metadata becomes exact-match fields usable as filters.</summary>
public sealed record Bm25Entry(long ChunkId, long DocumentId, int Generation, string Text, string Heading, string Title, IReadOnlyDictionary<string, string> Metadata);

public readonly record struct Bm25Hit(long ChunkId, float Score);

/// <summary>
/// A Lucene index in one directory, scored with BM25 (k1 1.2, b 0.75). Chunk text is indexed but not stored (the
/// store holds it, encrypted if the collection asks), so the index holds terms only. Writers open per batch and close
/// after commit, so the CLI and a server can share a data directory; searches use a refreshed searcher.
/// </summary>
public sealed class Bm25Index : IDisposable
{
    public const LuceneVersion Version = LuceneVersion.LUCENE_48;

    private const string AnalyzerFile = "analyzer.txt";
    private readonly LuceneDirectory directory;
    private readonly Analyzer analyzer;
    private readonly System.Threading.Lock writeLock = new();
    private SearcherManager? searchers;

    private sealed class Bm25SearcherFactory : SearcherFactory
    {
        public override IndexSearcher NewSearcher(IndexReader reader) => new(reader) { Similarity = new BM25Similarity() };
    }

    private Bm25Index(string path, string analyzerName)
    {
        Path = path;
        AnalyzerName = analyzerName;
        analyzer = Bm25Analyzers.Create(analyzerName);
        directory = FSDirectory.Open(path);
    }

    public string Path { get; }

    public string AnalyzerName { get; }

    /// <summary>Opens the index in <paramref name="path"/>, creating it with <paramref name="analyzerName"/> when it does not exist yet.</summary>
    public static Bm25Index Open(string path, string? analyzerName = null)
    {
        System.IO.Directory.CreateDirectory(path);
        var file = System.IO.Path.Combine(path, AnalyzerFile);
        string name;
        if (File.Exists(file))
        {
            name = File.ReadAllText(file).Trim();
        }
        else
        {
            name = analyzerName ?? Bm25Analyzers.Default;
            File.WriteAllText(file, name);
        }

        return new Bm25Index(path, name);
    }

    /// <summary>Adds (or replaces, by chunk id) entries and commits.</summary>
    public void Add(IEnumerable<Bm25Entry> entries) => Write(w =>
    {
        foreach (var e in entries)
        {
            var doc = new Document
            {
                new StringField("id", e.ChunkId.ToString(System.Globalization.CultureInfo.InvariantCulture), Field.Store.YES),
                new StringField("doc", e.DocumentId.ToString(System.Globalization.CultureInfo.InvariantCulture), Field.Store.NO),
                new StringField("gen", e.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture), Field.Store.NO),
                new TextField("text", e.Text, Field.Store.NO),
                new TextField("heading", e.Heading, Field.Store.NO),
                new TextField("title", e.Title, Field.Store.NO),
            };
            foreach (var (key, value) in e.Metadata)
            {
                doc.Add(new StringField("m." + key, value, Field.Store.NO));
            }

            w.UpdateDocument(new Term("id", e.ChunkId.ToString(System.Globalization.CultureInfo.InvariantCulture)), doc);
        }
    });

    /// <summary>Deletes every entry of a document except those of <paramref name="keepGeneration"/> (all when null).</summary>
    public void DeleteDocument(long documentId, int? keepGeneration = null) => Write(w =>
    {
        var query = new BooleanQuery { { new TermQuery(new Term("doc", documentId.ToString(System.Globalization.CultureInfo.InvariantCulture))), Occur.MUST } };
        if (keepGeneration is { } g)
        {
            query.Add(new TermQuery(new Term("gen", g.ToString(System.Globalization.CultureInfo.InvariantCulture))), Occur.MUST_NOT);
        }

        w.DeleteDocuments(query);
    });

    /// <summary>Deletes the entries of one generation of a document (a version whose ingestion failed).</summary>
    public void DeleteGeneration(long documentId, int generation) => Write(w => w.DeleteDocuments(new BooleanQuery
    {
        { new TermQuery(new Term("doc", documentId.ToString(System.Globalization.CultureInfo.InvariantCulture))), Occur.MUST },
        { new TermQuery(new Term("gen", generation.ToString(System.Globalization.CultureInfo.InvariantCulture))), Occur.MUST },
    }));

    private void Write(Action<IndexWriter> action)
    {
        lock (writeLock)
        {
            var config = new IndexWriterConfig(Version, analyzer) { Similarity = new BM25Similarity(), OpenMode = OpenMode.CREATE_OR_APPEND };
            using (var writer = new IndexWriter(directory, config))
            {
                action(writer);
                writer.Commit();
            }

            searchers?.MaybeRefreshBlocking();
        }
    }

    /// <summary>The analysed terms of <paramref name="text"/> (what a query matches on).</summary>
    public IReadOnlyList<string> Terms(string text)
    {
        var terms = new List<string>();
        using var stream = analyzer.GetTokenStream("text", new StringReader(text));
        var term = stream.AddAttribute<ICharTermAttribute>();
        stream.Reset();
        while (stream.IncrementToken())
        {
            terms.Add(term.ToString());
        }

        stream.End();
        return terms;
    }

    /// <summary>
    /// Best chunks for <paramref name="query"/>: each query term matches the chunk text, its headings (×0.5) and the
    /// document title (×0.3). <paramref name="metadata"/> entries must all match exactly.
    /// </summary>
    public IReadOnlyList<Bm25Hit> Search(string query, int k, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var terms = Terms(query).Distinct(StringComparer.Ordinal).Take(512).ToList();
        if (terms.Count == 0 || k <= 0)
        {
            return [];
        }

        var manager = Searchers();
        if (manager is null)
        {
            return [];
        }

        var scoring = new BooleanQuery();
        foreach (var t in terms)
        {
            scoring.Add(new TermQuery(new Term("text", t)), Occur.SHOULD);
            scoring.Add(new TermQuery(new Term("heading", t)) { Boost = 0.5f }, Occur.SHOULD);
            scoring.Add(new TermQuery(new Term("title", t)) { Boost = 0.3f }, Occur.SHOULD);
        }

        Filter? filter = null;
        if (metadata is { Count: > 0 })
        {
            var must = new BooleanQuery();
            foreach (var (key, value) in metadata)
            {
                must.Add(new TermQuery(new Term("m." + key, value)), Occur.MUST);
            }

            filter = new QueryWrapperFilter(must);
        }

        manager.MaybeRefresh();
        var searcher = manager.Acquire();
        try
        {
            var top = searcher.Search(scoring, filter, k);
            var hits = new List<Bm25Hit>(top.ScoreDocs.Length);
            foreach (var sd in top.ScoreDocs)
            {
                var id = long.Parse(searcher.Doc(sd.Doc).Get("id"), System.Globalization.CultureInfo.InvariantCulture);
                hits.Add(new Bm25Hit(id, sd.Score));
            }

            return hits;
        }
        finally
        {
            manager.Release(searcher);
        }
    }

    private SearcherManager? Searches() => searchers;

    private SearcherManager? Searchers()
    {
        if (searchers is not null)
        {
            return searchers;
        }

        lock (writeLock)
        {
            if (searchers is null && DirectoryReader.IndexExists(directory))
            {
                searchers = new SearcherManager(directory, new Bm25SearcherFactory());
            }

            return searchers;
        }
    }

    public void Dispose()
    {
        Searches()?.Dispose();
        directory.Dispose();
        analyzer.Dispose();
    }
}
