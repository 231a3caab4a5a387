using System.Runtime.CompilerServices;
using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Multi-head latent attention over the compressed cache: every head of a token scores the same cached rows
/// (latent + rope key) and mixes their latent part. Parallel over (token, head); scores use vectorised dot products,
/// the value mix a vectorised multiply-add per cached row, softmax in fp32 with the max subtracted.
/// </summary>
internal static unsafe class CpuLatentAttention
{
    public sealed class Job : CpuJob
    {
        public float* Q;
        public float* Cache;
        public float* Output;
        public int Heads;
        public int Width;
        public int ValueDim;
        public int BlockSize;
        public float Scale;
        public ForwardBatch Batch = null!;
        public int[] TokenSequence = [];
        public float[][] Scores = [];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var t = index / Heads;
            var seq = Batch.Sequences[TokenSequence[t]];
            var position = seq.ContextLength - seq.QueryLength + (t - seq.QueryStart);
            var query = new ReadOnlySpan<float>(Q + ((nint)index * Width), Width);
            var scores = Scores[worker].AsSpan(0, position + 1);
            for (var p = 0; p <= position; p++)
            {
                scores[p] = TensorPrimitives.Dot(query, Row(seq, p)) * Scale;
            }

            var max = TensorPrimitives.Max(scores);
            TensorPrimitives.Subtract(scores, max, scores);
            TensorPrimitives.Exp(scores, scores);
            var inverse = 1f / TensorPrimitives.Sum(scores);
            var output = new Span<float>(Output + ((nint)index * ValueDim), ValueDim);
            output.Clear();
            for (var p = 0; p <= position; p++)
            {
                TensorPrimitives.MultiplyAdd(Row(seq, p)[..ValueDim], scores[p] * inverse, output, output);
            }
        }

        private ReadOnlySpan<float> Row(SequenceSlice seq, int p)
        {
            var slot = ((nint)seq.BlockTable[p / BlockSize] * BlockSize) + (p % BlockSize);
            return new ReadOnlySpan<float>(Cache + (slot * Width), Width);
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, CpuTensor q, CpuTensor latent, CpuTensor cache, ForwardBatch batch, float scale, int valueDim, CpuTensor output)
    {
        q.RequireDType(DType.F32);
        latent.RequireDType(DType.F32);
        cache.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        int tokens = q.Shape[0], heads = q.Shape[1], width = q.Shape[2];
        if (latent.Rows != tokens || latent.Columns != width || cache.Columns != width || valueDim > width
            || output.ElementCount != (long)tokens * heads * valueDim || tokens != batch.TokenCount)
        {
            throw new ArgumentException($"LatentAttention shapes do not match: q {q}, latent {latent}, cache {cache}, output {output}, value dim {valueDim}");
        }

        var cacheRows = cache.Rows;
        var latentRows = latent.F32Span;
        var cacheSpan = new Span<float>(cache.F32Pointer, checked((int)cache.ElementCount));
        for (var t = 0; t < tokens; t++)
        {
            if ((uint)batch.SlotMapping[t] >= cacheRows)
            {
                throw new ArgumentOutOfRangeException(nameof(batch), $"slot {batch.SlotMapping[t]} outside the cache {cache}");
            }

            latentRows.Slice(t * width, width).CopyTo(cacheSpan.Slice(batch.SlotMapping[t] * width, width));
        }

        if (job.TokenSequence.Length < tokens)
        {
            job.TokenSequence = new int[Math.Max(tokens, 2 * job.TokenSequence.Length)];
        }

        for (var s = 0; s < batch.Sequences.Length; s++)
        {
            job.TokenSequence.AsSpan(batch.Sequences[s].QueryStart, batch.Sequences[s].QueryLength).Fill(s);
        }

        var context = batch.MaxContextLength;
        if (job.Scores.Length != pool.ThreadCount || job.Scores[0].Length < context)
        {
            job.Scores = Enumerable.Range(0, pool.ThreadCount).Select(_ => new float[Math.Max(context, 256)]).ToArray();
        }

        job.Q = q.F32Pointer;
        job.Cache = cache.F32Pointer;
        job.Output = output.F32Pointer;
        job.Heads = heads;
        job.Width = width;
        job.ValueDim = valueDim;
        job.BlockSize = cache.Shape[1];
        job.Scale = scale;
        job.Batch = batch;
        pool.Run(job, tokens * heads);
        job.Batch = null!;
    }
}
