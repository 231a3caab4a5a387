using System.Diagnostics;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;

// Measures the CPU backend's matmul against the machine's memory bandwidth.
// usage: dotnet run -c Release --project tools/CpuBench [threads]
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
