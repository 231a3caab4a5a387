using System.Runtime.InteropServices;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using static Enclave.Engine.Tests.Backends.CpuBackendOpsTests;

namespace Enclave.Engine.Tests.Backends;

public sealed class CpuTensorTests
{
    [Fact]
    public void SliceRows_and_Reshape_are_views_onto_the_parent_data()
    {
        using var backend = new CpuBackend(2);
        using var parent = F32(backend, Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 6, 4);

        using var slice = parent.SliceRows(2, 3);
        Assert.Equal([3, 4], slice.Shape);
        Assert.Equal(Enumerable.Range(8, 12).Select(i => (float)i), Download(backend, slice));

        using var reshaped = slice.Reshape(4, 3);
        using var inner = reshaped.SliceRows(1, 2);
        Assert.Equal([2, 3], inner.Shape);
        Assert.Equal(Enumerable.Range(11, 6).Select(i => (float)i), Download(backend, inner));

        // Writing through the innermost view changes exactly those elements of the parent.
        backend.Add(inner, inner, inner);
        var all = Download(backend, parent);
        for (var i = 0; i < 24; i++)
        {
            Assert.Equal(i is >= 11 and < 17 ? 2f * i : i, all[i]);
        }

        Assert.False(((CpuTensor)slice).OwnsData);
        Assert.True(((CpuTensor)parent).OwnsData);
    }

    [Fact]
    public void An_op_writing_into_a_row_slice_leaves_the_other_rows_alone()
    {
        using var backend = new CpuBackend(2);
        using var x = F32(backend, [1, 2, 3, 4, 5, 6], 2, 3);
        using var w = F32(backend, [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1], 4, 3);
        using var output = Poisoned(backend, 5, 4);
        using var rows = output.SliceRows(1, 2);
        backend.MatMul(x, w, null, rows);
        var y = Download(backend, output);
        Assert.All(y[..4], v => Assert.True(float.IsNaN(v)));
        Assert.Equal([1, 2, 3, 6, 4, 5, 6, 15], y[4..12]);
        Assert.All(y[12..], v => Assert.True(float.IsNaN(v)));
    }

    [Fact]
    public void Views_reject_shapes_and_ranges_that_do_not_fit()
    {
        using var backend = new CpuBackend(1);
        using var t = backend.Allocate(DType.BF16, 4, 6);
        Assert.Throws<ArgumentException>(() => t.Reshape(5, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.SliceRows(3, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.SliceRows(-1, 1));
        using var empty = t.SliceRows(4, 0);
        Assert.Equal(0, empty.ElementCount);
        using var flat = t.Reshape(24);
        Assert.Equal(DType.BF16, flat.DType);
    }

    [Fact]
    public unsafe void LoadWeight_reads_the_mapped_bytes_in_place()
    {
        using var backend = new CpuBackend(2);
        const int Rows = 3, Columns = 5;
        var memory = (ushort*)NativeMemory.Alloc(Rows * Columns * sizeof(ushort));
        try
        {
            var bytes = new Span<ushort>(memory, Rows * Columns);
            bytes.Fill(0x3F80); // bf16 1.0
            var source = new CheckpointTensor("embed", DType.BF16, [Rows, Columns], (byte*)memory, Rows * Columns * sizeof(ushort), "in-memory");
            using var weight = backend.LoadWeight(source);
            Assert.False(((CpuTensor)weight).OwnsData);

            // Change the source after loading: the tensor must see it, which it only can if nothing was copied.
            bytes[(2 * Columns) + 4] = 0x4040; // bf16 3.0
            var batch = Batch([2], [0], [new SequenceSlice(0, 1, 1, [0])]);
            using var output = Poisoned(backend, 1, Columns);
            backend.Embedding(weight, batch, output);
            Assert.Equal([1, 1, 1, 1, 3], Download(backend, output));
        }
        finally
        {
            NativeMemory.Free(memory);
        }
    }

    [Fact]
    public unsafe void LoadWeight_rejects_a_byte_count_that_does_not_match_the_shape()
    {
        using var backend = new CpuBackend(1);
        var memory = stackalloc byte[16];
        var source = new CheckpointTensor("w", DType.F16, [3, 3], memory, 16, "in-memory");
        Assert.Throws<ArgumentException>(() => backend.LoadWeight(source));
    }

    [Fact]
    public void The_pool_runs_every_item_exactly_once_across_many_calls()
    {
        using var pool = new CpuWorkerPool(4);
        var job = new CountingJob(1000);
        for (var call = 0; call < 200; call++)
        {
            pool.Run(job, 1 + (call * 7 % 1000));
        }

        for (var i = 0; i < 1000; i++)
        {
            var expected = Enumerable.Range(0, 200).Count(call => i < 1 + (call * 7 % 1000));
            Assert.Equal(expected, job.Counts[i]);
        }
    }

    [Fact]
    public void A_failing_item_surfaces_on_the_calling_thread_and_the_pool_stays_usable()
    {
        using var pool = new CpuWorkerPool(3);
        var failing = new FailingJob();
        Assert.Throws<AggregateException>(() => pool.Run(failing, 50));
        var job = new CountingJob(10);
        pool.Run(job, 10);
        Assert.All(job.Counts, c => Assert.Equal(1, c));
    }

    private sealed class CountingJob(int size) : CpuJob
    {
        public int[] Counts { get; } = new int[size];

        public override void Execute(int index, int worker) => Interlocked.Increment(ref Counts[index]);
    }

    private sealed class FailingJob : CpuJob
    {
        public override void Execute(int index, int worker)
        {
            if (index == 17)
            {
                throw new InvalidOperationException("item 17");
            }
        }
    }
}
