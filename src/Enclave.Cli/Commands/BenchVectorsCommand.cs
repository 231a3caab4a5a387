using System.CommandLine;
using System.Diagnostics;
using Enclave.Knowledge.Vectors;

namespace Enclave.Cli.Commands;

/// <summary>
/// <c>enclave bench vectors</c>: builds an HNSW index and an exact (SIMD brute-force) index over the same synthetic
/// clustered vectors, flushes and reopens both from disk, then reports build time, disk and memory, recall@10 of
/// HNSW against exact search, and per-query latency of both in the same run.
/// </summary>
internal static class BenchVectorsCommand
{
    private const int K = 10;

    public static Command Create()
    {
        var count = new Option<int>("--count") { Description = "Vectors in the index", DefaultValueFactory = _ => 100_000 };
        var dims = new Option<int>("--dims") { Description = "Dimensions per vector", DefaultValueFactory = _ => 384 };
        var storage = new Option<VectorStorage>("--storage") { Description = "Float32, Float16 or Int8", DefaultValueFactory = _ => VectorStorage.Float32 };
        var metric = new Option<VectorMetric>("--metric") { Description = "Cosine or InnerProduct", DefaultValueFactory = _ => VectorMetric.Cosine };
        var m = new Option<int>("--m") { Description = "HNSW links per node on upper levels (2M on level 0)", DefaultValueFactory = _ => 16 };
        var efConstruction = new Option<int>("--ef-construction") { Description = "HNSW build beam width", DefaultValueFactory = _ => 200 };
        var ef = new Option<string>("--ef") { Description = "HNSW search beam widths to measure, comma-separated", DefaultValueFactory = _ => "64,128" };
        var queries = new Option<int>("--queries") { Description = "Queries timed per configuration", DefaultValueFactory = _ => 500 };
        var threads = new Option<int>("--threads") { Description = "Build threads (-1: all cores)", DefaultValueFactory = _ => -1 };
        var seed = new Option<int>("--seed") { Description = "Seed of the synthetic data", DefaultValueFactory = _ => 42 };
        var dir = new Option<DirectoryInfo?>("--dir") { Description = "Where to write the indexes (default: a temporary folder, deleted afterwards)" };
        var command = new Command("vectors", "Measure the HNSW vector index against exact search: build, memory, recall@10, query latency")
        {
            count, dims, storage, metric, m, efConstruction, ef, queries, threads, seed, dir,
        };
        command.SetAction(result =>
        {
            var n = result.GetValue(count);
            var d = result.GetValue(dims);
            var q = result.GetValue(queries);
            if (n < K || d < 1 || q < 1)
            {
                throw new CliException($"--count must be ≥ {K}, --dims ≥ 1 and --queries ≥ 1");
            }

            var efs = ParseEfs(result.GetValue(ef)!);
            var root = result.GetValue(dir)?.FullName;
            var temporary = root is null;
            root ??= Path.Combine(Path.GetTempPath(), "enclave-bench-vectors-" + Environment.ProcessId);
            if (Directory.Exists(Path.Combine(root, "hnsw")) || Directory.Exists(Path.Combine(root, "exact")) || Directory.Exists(Path.Combine(root, "exact-fp32")))
            {
                throw new CliException($"{root} already holds hnsw/, exact/ or exact-fp32/; give an empty --dir");
            }

            try
            {
                Run(n, d, result.GetValue(storage), result.GetValue(metric), result.GetValue(m), result.GetValue(efConstruction), efs, q,
                    result.GetValue(threads), result.GetValue(seed), root);
            }
            finally
            {
                if (temporary && Directory.Exists(root))
                {
                    Directory.Delete(root, recursive: true);
                }
            }

            return 0;
        });
        return command;
    }

    private static int[] ParseEfs(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var values = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], out values[i]) || values[i] < 1)
            {
                throw new CliException($"--ef: '{parts[i]}' is not a positive integer");
            }
        }

        return values.Length > 0 ? values : throw new CliException("--ef needs at least one value");
    }

    private static void Run(int count, int dims, VectorStorage storage, VectorMetric metric, int m, int efConstruction, int[] efs, int queryCount,
        int threads, int seed, string root)
    {
        var data = new SyntheticVectors(dims, seed);
        var hnswDir = Path.Combine(root, "hnsw");
        var exactDir = Path.Combine(root, "exact");
        var options = new VectorIndexOptions(dims, metric, storage, VectorIndexKind.Hnsw, m, efConstruction, efs[0]);
        Console.WriteLine($"data         {count:N0} × {dims} synthetic clustered vectors (seed {seed}), {metric}, {storage} storage");
        Console.WriteLine($"hnsw         M {m} (level 0: {2 * m}), efConstruction {efConstruction}, build threads {(threads < 0 ? Environment.ProcessorCount : threads)}");
        Console.WriteLine($"machine      {Environment.ProcessorCount} cores, {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated switch { true => "Vector512", false => "Vector256" }} kernels");

        // Build both in batches so the caller's float copy never has to hold all vectors at once.
        const int batch = 50_000;
        var buffer = new float[(long)Math.Min(batch, count) * dims];
        var ids = new long[Math.Min(batch, count)];
        double hnswBuild = 0, exactBuild = 0, generate = 0;
        // With fp16/int8 storage a third index, exact over fp32, measures what quantisation alone costs in recall.
        var quantised = storage != VectorStorage.Float32;
        var fullDir = Path.Combine(root, "exact-fp32");
        using (var hnsw = (HnswVectorIndex)VectorIndex.Create(hnswDir, options))
        using (var exact = (ExactVectorIndex)VectorIndex.Create(exactDir, options with { Kind = VectorIndexKind.Exact }))
        using (var full = quantised ? (ExactVectorIndex)VectorIndex.Create(fullDir, options with { Kind = VectorIndexKind.Exact, Storage = VectorStorage.Float32 }) : null)
        {
            for (var first = 0; first < count; first += batch)
            {
                var size = Math.Min(batch, count - first);
                var clock = Stopwatch.StartNew();
                var vectors = buffer.AsSpan(0, size * dims);
                data.Fill(first, size, vectors);
                for (var i = 0; i < size; i++)
                {
                    ids[i] = first + i;
                }

                generate += clock.Elapsed.TotalSeconds;
                clock.Restart();
                hnsw.AddRange(ids.AsSpan(0, size), vectors, threads);
                hnswBuild += clock.Elapsed.TotalSeconds;
                clock.Restart();
                exact.AddRange(ids.AsSpan(0, size), vectors);
                exactBuild += clock.Elapsed.TotalSeconds;
                full?.AddRange(ids.AsSpan(0, size), vectors);
            }

            full?.Flush();

            var builtRss = Process.GetCurrentProcess().WorkingSet64;
            var flush = Stopwatch.StartNew();
            hnsw.Flush();
            var hnswFlush = flush.Elapsed.TotalSeconds;
            flush.Restart();
            exact.Flush();
            var exactFlush = flush.Elapsed.TotalSeconds;
            Console.WriteLine($"build        hnsw {hnswBuild:F1} s ({count / hnswBuild:F0} vectors/s), exact {exactBuild:F2} s; data generation {generate:F1} s (not counted)");
            Console.WriteLine($"flush        hnsw {hnswFlush:F2} s, exact {exactFlush:F2} s; process RSS after build {builtRss / 1048576.0:F0} MiB");
        }

        buffer = null;
        GC.Collect();
        var open = Stopwatch.StartNew();
        using var hnswIndex = (HnswVectorIndex)VectorIndex.Open(hnswDir);
        var hnswOpen = open.Elapsed.TotalSeconds;
        open.Restart();
        using var exactIndex = (ExactVectorIndex)VectorIndex.Open(exactDir);
        var exactOpen = open.Elapsed.TotalSeconds;
        var hnswBytes = DirectoryBytes(hnswDir);
        var exactBytes = DirectoryBytes(exactDir);
        Console.WriteLine($"disk         hnsw {hnswBytes / 1048576.0:F1} MiB ({(double)hnswBytes / count:F0} bytes/vector), exact {exactBytes / 1048576.0:F1} MiB");
        Console.WriteLine($"open         hnsw {hnswOpen * 1000:F0} ms, exact {exactOpen * 1000:F0} ms (files memory-mapped; ids indexed, graph validated)");

        var queries = data.Generate(count + 1_000_000L, queryCount);
        var truth = new long[queryCount][];
        var exactLatency = new double[queryCount];
        for (var i = 0; i < Math.Min(5, queryCount); i++)
        {
            exactIndex.Search(queries.AsSpan(i * dims, dims), K);
        }

        for (var i = 0; i < queryCount; i++)
        {
            var clock = Stopwatch.StartNew();
            var hits = exactIndex.Search(queries.AsSpan(i * dims, dims), K);
            exactLatency[i] = clock.Elapsed.TotalMilliseconds;
            truth[i] = [.. hits.Select(h => h.Id)];
        }

        Console.WriteLine($"exact        p50 {Percentile(exactLatency, 0.50):F3} ms, p95 {Percentile(exactLatency, 0.95):F3} ms per query " +
            $"({(count >= ExactVectorIndex.ParallelThreshold ? $"partitions scanned on {Environment.ProcessorCount} cores" : "one thread")})");
        long[][]? fullTruth = null;
        if (quantised)
        {
            using var full = VectorIndex.Open(fullDir);
            fullTruth = new long[queryCount][];
            var agree = 0;
            for (var i = 0; i < queryCount; i++)
            {
                fullTruth[i] = [.. full.Search(queries.AsSpan(i * dims, dims), K).Select(h => h.Id)];
                agree += truth[i].Count(id => Array.IndexOf(fullTruth[i], id) >= 0);
            }

            Console.WriteLine($"quantisation exact {storage} search finds {(double)agree / (queryCount * K):F4} of the exact fp32 top 10");
        }

        foreach (var efSearch in efs)
        {
            var latency = new double[queryCount];
            var found = 0;
            var foundFull = 0;
            for (var i = 0; i < Math.Min(20, queryCount); i++)
            {
                hnswIndex.Search(queries.AsSpan(i * dims, dims), K, efSearch);
            }

            for (var i = 0; i < queryCount; i++)
            {
                var clock = Stopwatch.StartNew();
                var hits = hnswIndex.Search(queries.AsSpan(i * dims, dims), K, efSearch);
                latency[i] = clock.Elapsed.TotalMilliseconds;
                foreach (var hit in hits)
                {
                    found += Array.IndexOf(truth[i], hit.Id) >= 0 ? 1 : 0;
                    foundFull += fullTruth is not null && Array.IndexOf(fullTruth[i], hit.Id) >= 0 ? 1 : 0;
                }
            }

            var p50 = Percentile(latency, 0.50);
            Console.WriteLine($"hnsw ef {efSearch,-4} recall@10 {(double)found / (queryCount * K):F4}, p50 {p50:F3} ms, p95 {Percentile(latency, 0.95):F3} ms per query " +
                $"(one thread; {Percentile(exactLatency, 0.50) / p50:F0}× faster than exact at p50)" +
                (fullTruth is not null ? $"; {(double)foundFull / (queryCount * K):F4} of the fp32 top 10" : string.Empty));
        }

        var process = Process.GetCurrentProcess();
        Console.WriteLine($"memory       RSS {process.WorkingSet64 / 1048576.0:F0} MiB after searching (mapped pages included), peak {process.PeakWorkingSet64 / 1048576.0:F0} MiB; " +
            $"native heap of the opened indexes {(hnswIndex.NativeBytes + exactIndex.NativeBytes) / 1048576.0:F1} MiB");
    }

    private static double Percentile(double[] values, double p)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
    }

    private static long DirectoryBytes(string directory) => new DirectoryInfo(directory).EnumerateFiles().Sum(f => f.Length);
}
