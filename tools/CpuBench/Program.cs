using System.Diagnostics;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;

// Measures the CPU backend's matmul against the machine's memory bandwidth.
// usage: dotnet run -c Release --project tools/CpuBench [threads] [quick | kernel | qkernel | prefill [tokens,...] [cold] | pairs | q8decode | attention [contexts] [calls] | decode]
var threads = args.Length > 0 ? int.Parse(args[0]) : 0;
var quick = args.Length > 1 && args[1] == "quick";

// The weight set is rotated through several copies whose total exceeds the last-level cache, as a model's
// layers do, so every GEMV reads its weights from memory ("cold"); "hot" repeats one matrix that may sit in cache.
const long ColdBytes = 256L << 20;
using var backend = new CpuBackend(threads);
Console.WriteLine($"backend: {backend.Name}");

if (args.Length > 1 && args[1] == "kernel")
{
    // Cache-resident weights, one thread: the kernel's compute ceiling, free of memory effects.
    foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
    {
        foreach (var tokens in new[] { 1, 4, 64 })
        {
            const int Rows = 64, Columns = 1536;
            using var w = backend.Allocate(dtype, Rows, Columns);
            backend.UploadBytes(RandomWeights((long)Rows * Columns * dtype.SizeInBytes(), dtype, 1), w);
            using var x = backend.Allocate(DType.F32, tokens, Columns);
            using var y = backend.Allocate(DType.F32, tokens, Rows);
            backend.Upload(RandomFloats(tokens * Columns), x);
            var best = double.MaxValue;
            for (var i = 0; i < 2000; i++)
            {
                var start = Stopwatch.GetTimestamp();
                backend.MatMul(x, w, null, y);
                best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
            }

            var bytes = (double)Rows * Columns * dtype.SizeInBytes();
            Console.WriteLine($"kernel {dtype,-4} T={tokens,-3} {best * 1e6,8:F2} us {bytes / best / 1e9,7:F1} GB/s {2.0 * tokens * Rows * Columns / best / 1e9,7:F1} GFLOP/s");
        }
    }

    return;
}

if (args.Length > 1 && args[1] == "prefill")
{
    // F16 and BF16 prefill products of R1-Distill-Qwen-1.5B's shapes (q/o, gate/up, down) at several token counts,
    // best of many runs, on all threads: run once as is and once with ENCLAVE_CPU_AMX_F16=0 to set the AMX-BF16
    // kernels against the vector path (where each token count starts to win is CpuMatMul.AmxMinTokens).
    // "cold": the weights rotate through copies that together exceed the last-level cache, as a model's layers do.
    int[] counts = args.Length > 2 ? [.. args[2].Split(',').Select(int.Parse)] : [8, 12, 16, 24, 32, 48, 64, 128];
    var cold = args.Length > 3 && args[3] == "cold";
    foreach (var dtype in new[] { DType.F16, DType.BF16 })
    {
        foreach (var (rows, columns) in new[] { (1536, 1536), (8960, 1536), (1536, 8960) })
        {
            var bytes = (long)rows * columns * 2;
            var weights = new DeviceTensor[cold ? (int)Math.Max(2, (ColdBytes + bytes - 1) / bytes) : 1];
            for (var c = 0; c < weights.Length; c++)
            {
                weights[c] = backend.Allocate(dtype, rows, columns);
                backend.UploadBytes(RandomWeights(bytes, dtype, c + 1), weights[c]);
            }

            foreach (var tokens in counts)
            {
                using var x = backend.Allocate(DType.F32, tokens, columns);
                using var y = backend.Allocate(DType.F32, tokens, rows);
                backend.Upload(RandomFloats(tokens * columns), x);
                var best = double.MaxValue;
                var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
                for (var i = 0; i < 3 || Stopwatch.GetTimestamp() < deadline; i++)
                {
                    var start = Stopwatch.GetTimestamp();
                    backend.MatMul(x, weights[i % weights.Length], null, y);
                    best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
                }

                Console.WriteLine($"prefill {dtype,-4} [{rows} x {columns}] T={tokens,-4} {best * 1e3,8:F3} ms {2.0 * tokens * rows * columns / best / 1e9,7:F1} GFLOP/s");
            }

            foreach (var w in weights)
            {
                w.Dispose();
            }
        }
    }

    return;
}

if (args.Length > 1 && args[1] == "qkernel")
{
    // Block-quantised weights, cache-resident, best of many runs: the kernels' compute ceiling per format, which a
    // loaded machine disturbs less than a model's tokens per second. Columns 896 are Qwen2-0.5B's rows.
    foreach (var dtype in new[] { DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q6_K })
    {
        foreach (var tokens in new[] { 1, 4, 64 })
        {
            const int Rows = 256;
            var columns = dtype.BlockElements() == 256 ? 1024 : 896;
            var blocks = new byte[dtype.StorageBytes((long)Rows * columns)];
            Enclave.Engine.Formats.Gguf.GgmlQuants.Quantize(dtype, RandomFloats(Rows * columns), blocks);
            using var w = backend.Allocate(dtype, Rows, columns);
            backend.UploadBytes(blocks, w);
            using var x = backend.Allocate(DType.F32, tokens, columns);
            using var y = backend.Allocate(DType.F32, tokens, Rows);
            backend.Upload(RandomFloats(tokens * columns), x);
            var best = double.MaxValue;
            for (var i = 0; i < 2000; i++)
            {
                var start = Stopwatch.GetTimestamp();
                backend.MatMul(x, w, null, y);
                best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
            }

            Console.WriteLine($"qkernel {dtype,-4} T={tokens,-3} {best * 1e6,8:F2} us {blocks.Length / best / 1e9,7:F1} GB/s {2.0 * tokens * Rows * columns / best / 1e9,7:F1} GFLOP/s");
        }
    }

    return;
}

if (args.Length > 1 && args[1] == "pairs")
{
    // On a machine shared with other work, contention swings both figures by several times. Here each GEMV is
    // timed right after a bandwidth probe over 64 MB, and the ratio of the pair is what is reported (median).
    foreach (var (outFeatures, inFeatures) in new[] { (8960, 1536), (151936, 1536) })
    {
        var bytes = (long)outFeatures * inFeatures * 2;
        var copies = (int)Math.Max(2, (ColdBytes + bytes - 1) / bytes);
        var weights = new DeviceTensor[copies];
        for (var c = 0; c < copies; c++)
        {
            weights[c] = backend.Allocate(DType.BF16, outFeatures, inFeatures);
            backend.UploadBytes(RandomWeights(bytes, DType.BF16, c), weights[c]);
        }

        using var x = backend.Allocate(DType.F32, 1, inFeatures);
        using var y = backend.Allocate(DType.F32, 1, outFeatures);
        backend.Upload(RandomFloats(inFeatures), x);
        backend.MatMul(x, weights[0], null, y);
        var pairs = outFeatures > 100_000 ? 15 : 30;
        var ratios = new double[pairs];
        var gemvs = new double[pairs];
        var probes = new double[pairs];
        for (var i = 0; i < pairs; i++)
        {
            probes[i] = MemoryBandwidth.MeasureGBps(threads, 64L << 20, 1);
            var start = Stopwatch.GetTimestamp();
            backend.MatMul(x, weights[i % copies], null, y);
            gemvs[i] = bytes / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9;
            ratios[i] = gemvs[i] / probes[i];
        }

        Array.Sort(ratios);
        Array.Sort(gemvs);
        Array.Sort(probes);
        Console.WriteLine(
            $"BF16 GEMV {inFeatures}x{outFeatures}: GEMV GB/s median {gemvs[pairs / 2]:F1} (max {gemvs[^1]:F1}); probe GB/s median {probes[pairs / 2]:F1} (max {probes[^1]:F1}); GEMV/probe per pair median {ratios[pairs / 2] * 100:F0}% (quartiles {ratios[pairs / 4] * 100:F0}%..{ratios[pairs * 3 / 4] * 100:F0}%)");
        foreach (var w in weights)
        {
            w.Dispose();
        }
    }

    return;
}

if (args.Length > 1 && args[1] == "q8decode")
{
    // One Q8_0 decode step of Qwen2-0.5B's shape (24 layers' distinct weights plus the tied output table, about
    // 525 MB, more than the last-level cache), op by op as the model issues them, each op's time summed over the
    // layers and set against the bytes it reads: where a decode step's time goes, free of attention and sampling.
    const int Hidden = 896, Kv = 128, Inter = 4864, Vocab = 151936, Layers = 24;
    var steps = args.Length > 2 ? int.Parse(args[2]) : 30;
    DeviceTensor Q8(int rows, int columns, int seed)
    {
        var t = backend.Allocate(DType.Q8_0, rows, columns);
        backend.UploadBytes(RandomQ8_0((long)rows * columns, seed), t);
        return t;
    }

    var layers = new (DeviceTensor Q, DeviceTensor K, DeviceTensor V, DeviceTensor O, DeviceTensor Gate, DeviceTensor Up, DeviceTensor Down)[Layers];
    for (var l = 0; l < Layers; l++)
    {
        layers[l] = (Q8(Hidden, Hidden, 7 * l), Q8(Kv, Hidden, (7 * l) + 1), Q8(Kv, Hidden, (7 * l) + 2), Q8(Hidden, Hidden, (7 * l) + 3),
            Q8(Inter, Hidden, (7 * l) + 4), Q8(Inter, Hidden, (7 * l) + 5), Q8(Hidden, Inter, (7 * l) + 6));
    }

    using var head = Q8(Vocab, Hidden, 999);
    using var xh = backend.Allocate(DType.F32, 1, Hidden);
    using var q = backend.Allocate(DType.F32, 1, Hidden);
    using var k = backend.Allocate(DType.F32, 1, Kv);
    using var v = backend.Allocate(DType.F32, 1, Kv);
    using var o = backend.Allocate(DType.F32, 1, Hidden);
    using var g = backend.Allocate(DType.F32, 1, Inter);
    using var u = backend.Allocate(DType.F32, 1, Inter);
    using var d = backend.Allocate(DType.F32, 1, Hidden);
    using var logits = backend.Allocate(DType.F32, 1, Vocab);
    backend.Upload(RandomFloats(Hidden), xh);
    backend.Upload(RandomFloats(Inter), g);
    var names = new[] { "qkv shared", "o", "gate/up+silu", "down", "lm_head" };
    double Bytes(int rows, int columns) => (double)rows * columns / 32 * 34;
    var bytesPerStep = new[]
    {
        Layers * (Bytes(Hidden, Hidden) + (2 * Bytes(Kv, Hidden))), Layers * Bytes(Hidden, Hidden), Layers * 2 * Bytes(Inter, Hidden),
        Layers * Bytes(Hidden, Inter), Bytes(Vocab, Hidden),
    };
    // "ab": steps alternate between the shared calls (MatMulShared, SiluGatedMatMul) and one product per call (then
    // the activation), so the two are compared under the same machine load.
    var ab = args.Length > 3 && args[3] == "ab";
    var times = new double[steps][];
    for (var s = -2; s < steps; s++)
    {
        var separate = ab && (s & 1) == 1;
        var t = new double[names.Length];
        for (var l = 0; l < Layers; l++)
        {
            var w = layers[l];
            var t0 = Stopwatch.GetTimestamp();
            if (separate)
            {
                backend.MatMul(xh, w.Q, null, q);
                backend.MatMul(xh, w.K, null, k);
                backend.MatMul(xh, w.V, null, v);
            }
            else
            {
                backend.MatMulShared(xh, [new(w.Q, null, q), new(w.K, null, k), new(w.V, null, v)]);
            }

            var t1 = Stopwatch.GetTimestamp();
            backend.MatMul(q, w.O, null, o);
            var t2 = Stopwatch.GetTimestamp();
            if (separate)
            {
                backend.MatMul(xh, w.Gate, null, g);
                backend.MatMul(xh, w.Up, null, u);
                backend.SiluMul(g, u, g);
            }
            else
            {
                ((IBackend)backend).SiluGatedMatMul(xh, new(w.Gate, null, g), new(w.Up, null, u));
            }

            var t3 = Stopwatch.GetTimestamp();
            backend.MatMul(g, w.Down, null, d);
            var t4 = Stopwatch.GetTimestamp();
            t[0] += t1 - t0;
            t[1] += t2 - t1;
            t[2] += t3 - t2;
            t[3] += t4 - t3;
        }

        var t5 = Stopwatch.GetTimestamp();
        backend.MatMul(xh, head, null, logits);
        t[4] += Stopwatch.GetTimestamp() - t5;
        if (s >= 0)
        {
            times[s] = t;
        }
    }

    var bw = MemoryBandwidth.MeasureGBps(threads, 512L << 20, 5);
    Console.WriteLine($"bandwidth {bw:F1} GB/s");
    var total = 0.0;
    for (var i = 0; i < names.Length * (ab ? 2 : 1); i++)
    {
        var variant = ab ? (i < names.Length ? "shared   " : "separate ") : string.Empty;
        var sorted = times.Where((_, step) => !ab || (step & 1) == (i < names.Length ? 0 : 1)).Select(t => t[i % names.Length] / Stopwatch.Frequency).Order().ToArray();
        var median = sorted[sorted.Length / 2];
        total += i < names.Length ? median : 0;
        var perCall = median / (i % names.Length == 4 ? 1 : Layers) * 1e6;
        Console.WriteLine($"{variant}{names[i % names.Length],-14} {median * 1e3,7:F3} ms/step (best {sorted[0] * 1e3,7:F3}) {perCall,8:F1} us/call {bytesPerStep[i % names.Length] / median / 1e9,6:F1} GB/s");
    }

    Console.WriteLine($"products       {total * 1e3,7:F3} ms/step = {1 / total,5:F1} tok/s ceiling; {bytesPerStep.Sum() / total / 1e9:F1} GB/s over {bytesPerStep.Sum() / 1e6:F0} MB");
    foreach (var w in layers)
    {
        w.Q.Dispose();
        w.K.Dispose();
        w.V.Dispose();
        w.O.Dispose();
        w.Gate.Dispose();
        w.Up.Dispose();
        w.Down.Dispose();
    }

    return;
}

if (args.Length > 1 && args[1] == "attention")
{
    // One decode token's rope + attention on the Qwen2-0.5B shape (14 heads, 2 KV heads of 64) at several context
    // lengths, the cache in 16-position blocks as the engine allocates it; median and best of many calls, µs.
    const int Heads = 14, KvHeads = 2, HeadDim = 64, BlockSize = 16;
    var rope = new RopeSpec([.. Enumerable.Range(0, HeadDim / 2).Select(i => (float)Math.Pow(1e6, -2.0 * i / HeadDim))], HeadDim, false);
    int[] contexts = args.Length > 2 ? [.. args[2].Split(',').Select(int.Parse)] : [8, 64, 160, 512, 2048];
    foreach (var context in contexts)
    {
        var blocks = (context + BlockSize - 1) / BlockSize;
        using var q = backend.Allocate(DType.F32, 1, Heads, HeadDim);
        using var k = backend.Allocate(DType.F32, 1, KvHeads, HeadDim);
        using var v = backend.Allocate(DType.F32, 1, KvHeads, HeadDim);
        using var keyCache = backend.Allocate(DType.F32, blocks, BlockSize, KvHeads, HeadDim);
        using var valueCache = backend.Allocate(DType.F32, blocks, BlockSize, KvHeads, HeadDim);
        using var output = backend.Allocate(DType.F32, 1, Heads, HeadDim);
        backend.Upload(RandomFloats(blocks * BlockSize * KvHeads * HeadDim), keyCache);
        backend.Upload(RandomFloats(blocks * BlockSize * KvHeads * HeadDim), valueCache);
        var qValues = RandomFloats(Heads * HeadDim);
        var kvValues = RandomFloats(KvHeads * HeadDim);
        var batch = new ForwardBatch
        {
            TokenIds = [0], Positions = [context - 1], SlotMapping = [context - 1], LogitRows = [0],
            Sequences = [new SequenceSlice(0, 1, context, [.. Enumerable.Range(0, blocks)])],
        };
        var times = new List<double>();
        var calls = args.Length > 3 ? int.Parse(args[3]) : 3000;
        for (var i = 0; i < calls; i++)
        {
            backend.Upload(qValues, q);
            backend.Upload(kvValues, k);
            backend.Upload(kvValues, v);
            var start = Stopwatch.GetTimestamp();
            backend.RopeAttention(q, k, v, keyCache, valueCache, batch, rope, 0.125f, output);
            times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds * 1e6);
        }

        times.Sort();
        Console.WriteLine($"attention context {context,5}: median {times[times.Count / 2],8:F2} us, best {times[0],8:F2} us");
    }

    return;
}

if (args.Length > 1 && args[1] == "decode")
{
    // BF16 GEMV (one token) on the model shapes, read from memory, next to bandwidth probes taken just before
    // and after, best and median of many calls: on a shared machine the best is the uncontended figure.
    foreach (var (outFeatures, inFeatures) in new[] { (8960, 1536), (1536, 8960), (151936, 1536) })
    {
        var bytes = (long)outFeatures * inFeatures * 2;
        var copies = (int)Math.Max(2, (ColdBytes + bytes - 1) / bytes);
        var weights = new DeviceTensor[copies];
        for (var c = 0; c < copies; c++)
        {
            weights[c] = backend.Allocate(DType.BF16, outFeatures, inFeatures);
            backend.UploadBytes(RandomWeights(bytes, DType.BF16, c), weights[c]);
        }

        using var x = backend.Allocate(DType.F32, 1, inFeatures);
        using var y = backend.Allocate(DType.F32, 1, outFeatures);
        backend.Upload(RandomFloats(inFeatures), x);
        var before = MemoryBandwidth.MeasureGBps(threads, 256L << 20, 5);
        var times = new double[Math.Max(60, copies * 3)];
        for (var i = 0; i < times.Length; i++)
        {
            var start = Stopwatch.GetTimestamp();
            backend.MatMul(x, weights[i % copies], null, y);
            times[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }

        var after = MemoryBandwidth.MeasureGBps(threads, 256L << 20, 5);
        Array.Sort(times);
        var bw = Math.Max(before, after);
        var best = bytes / times[0] / 1e9;
        var median = bytes / times[times.Length / 2] / 1e9;
        Console.WriteLine($"BF16 GEMV {inFeatures}x{outFeatures} ({bytes / 1e6:F1} MB): best {times[0] * 1e3:F3} ms = {best:F1} GB/s ({best / bw * 100:F0}% of bw), median {median:F1} GB/s ({median / bw * 100:F0}%); bandwidth probe {before:F1} / {after:F1} GB/s");
        foreach (var w in weights)
        {
            w.Dispose();
        }
    }

    return;
}

var bandwidth = 0.0;
for (var i = 0; i < 3; i++)
{
    var measured = MemoryBandwidth.MeasureGBps(threads);
    Console.WriteLine($"memory read bandwidth: {measured:F1} GB/s");
    bandwidth = Math.Max(bandwidth, measured);
}

foreach (var (outFeatures, inFeatures, label) in new[]
{
    (8960, 1536, "gate/up 8960x1536"),
    (1536, 8960, "down 1536x8960"),
    (151936, 1536, "lm_head 151936x1536"),
})
{
    if (quick && inFeatures != 1536)
    {
        continue;
    }

    foreach (var dtype in quick ? new[] { DType.BF16 } : new[] { DType.BF16, DType.F16, DType.F32 })
    {
        var bytes = (long)outFeatures * inFeatures * dtype.SizeInBytes();
        var copies = (int)Math.Max(1, (ColdBytes + bytes - 1) / bytes);
        var weights = new DeviceTensor[copies];
        for (var c = 0; c < copies; c++)
        {
            weights[c] = backend.Allocate(dtype, outFeatures, inFeatures);
            backend.UploadBytes(RandomWeights(bytes, dtype, c), weights[c]);
        }

        foreach (var tokens in quick ? new[] { 1, 1, 1, 128 } : new[] { 1, 4, 128 })
        {
            using var x = backend.Allocate(DType.F32, tokens, inFeatures);
            using var y = backend.Allocate(DType.F32, tokens, outFeatures);
            backend.Upload(RandomFloats(tokens * inFeatures), x);

            var coldIterations = Math.Max(copies * 2, tokens == 1 ? 20 : 4);
            var cold = Time(coldIterations, i => backend.MatMul(x, weights[i % copies], null, y));
            var hot = Time(tokens == 1 ? 20 : 4, _ => backend.MatMul(x, weights[0], null, y));
            var flops = 2.0 * tokens * outFeatures * inFeatures;
            Console.WriteLine(
                $"{label,-20} {dtype,-4} T={tokens,-4} cold {cold * 1e3,8:F3} ms {bytes / cold / 1e9,6:F1} GB/s ({bytes / cold / 1e9 / bandwidth * 100,5:F1}% of bw) {flops / cold / 1e9,7:F1} GFLOP/s | hot {hot * 1e3,8:F3} ms {bytes / hot / 1e9,6:F1} GB/s");
        }

        foreach (var w in weights)
        {
            w.Dispose();
        }
    }
}

static double Time(int iterations, Action<int> action)
{
    for (var i = 0; i < Math.Min(iterations, 3); i++)
    {
        action(i);
    }

    // The mean over the run is what a decode loop sees, so report it rather than the best case.
    var total = Stopwatch.StartNew();
    for (var i = 0; i < iterations; i++)
    {
        action(i);
    }

    return total.Elapsed.TotalSeconds / iterations;
}

static float[] RandomFloats(int count)
{
    var random = new Random(1);
    var values = new float[count];
    for (var i = 0; i < count; i++)
    {
        values[i] = (float)((random.NextDouble() * 2) - 1);
    }

    return values;
}

static byte[] RandomWeights(long bytes, DType dtype, int seed)
{
    var random = new Random(seed);
    var data = new byte[bytes];
    if (dtype == DType.F32)
    {
        var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(data.AsSpan());
        for (var i = 0; i < floats.Length; i++)
        {
            floats[i] = (float)((random.NextDouble() * 0.2) - 0.1);
        }
    }
    else
    {
        var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(data.AsSpan());
        for (var i = 0; i < halves.Length; i++)
        {
            var value = (float)((random.NextDouble() * 0.2) - 0.1);
            halves[i] = dtype == DType.BF16
                ? (ushort)(BitConverter.SingleToInt32Bits(value) >> 16)
                : BitConverter.HalfToUInt16Bits((Half)value);
        }
    }

    return data;
}

static byte[] RandomQ8_0(long values, int seed)
{
    // Blocks of 34 bytes: a small finite fp16 scale, then 32 random int8 levels.
    var random = new Random(seed);
    var data = new byte[values / 32 * 34];
    random.NextBytes(data);
    for (long b = 0; b < data.Length; b += 34)
    {
        var scale = BitConverter.HalfToUInt16Bits((Half)(0.001f + (random.NextSingle() * 0.01f)));
        data[b] = (byte)scale;
        data[b + 1] = (byte)(scale >> 8);
    }

    return data;
}
