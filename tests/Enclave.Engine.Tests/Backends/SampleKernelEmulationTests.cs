using System.Reflection;
using System.Text.RegularExpressions;
using Enclave.Engine.Cuda;
using Enclave.Engine.Sampling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The sampling kernel's logic without a GPU: sample.cu is compiled by g++ against a host emulation of a thread block
/// (KernelEmulation/block_emulation.h: a thread per CUDA thread, barriers for __syncthreads and the warp shuffles)
/// and run on the GPU check's grid, in blocks of 64 threads (the kernel is written for any power-of-two block up to
/// 1024). Its exp is the host C library's, the one the host sampler calls, so its tokens must be exactly those of
/// the sampling definition with ties in index order (the kernel's documented tie rule), and the GPU check's
/// comparison with the host sampler must pass. What this cannot check (the device's exp and NVRTC) GpuCheck does.
/// </summary>
public sealed partial class SampleKernelEmulationTests
{
    [Fact]
    public void Sample_kernel_on_emulated_blocks_follows_the_definition()
    {
        var directory = Directory.CreateTempSubdirectory("enclave-sample-emulation-");
        try
        {
            var assembly = typeof(CudaBackend).Assembly;
            foreach (var name in new[] { "common.cuh", "sample.cu" })
            {
                using var stream = assembly.GetManifestResourceStream("Enclave.Engine.Cuda.Kernels." + name)!;
                using var reader = new StreamReader(stream);
                File.WriteAllText(Path.Combine(directory.FullName, name), InlineAsm().Replace(reader.ReadToEnd(), "enclave_blanked_asm("));
            }

            var emulation = Path.Combine(AppContext.BaseDirectory, "Backends", "KernelEmulation");
            var exe = Path.Combine(directory.FullName, "sample_rows");
            var (code, output) = ExternalProcess.Run("g++", "-O2", "-std=c++20", "-pthread", "-w", "-I", directory.FullName, "-I", emulation, Path.Combine(emulation, "sample_rows_main.cpp"), "-o", exe);
            Assert.True(code == 0, "g++ failed (g++ with C++20 <barrier> is needed; .ci/run installs it):\n" + output);

            var rowsChecked = 0;
            foreach (var full in SampleCheck.Cases([7, 1000], 3))
            {
                // Every other row of the grid keeps the run short while covering every parameter kind.
                var pick = Enumerable.Range(0, full.Rows.Length).Where(i => i % 2 == 1).ToArray();
                var c = full with
                {
                    Rows = [.. pick.Select(i => full.Rows[i])],
                    Logits = [.. pick.SelectMany(i => full.Logits.AsSpan(i * full.Vocab, full.Vocab).ToArray())],
                };
                var input = Path.Combine(directory.FullName, "in.bin");
                var result = Path.Combine(directory.FullName, "out.bin");
                using (var writer = new BinaryWriter(File.Create(input)))
                {
                    writer.Write(c.Rows.Length);
                    writer.Write(c.Vocab);
                    foreach (var v in c.Logits)
                    {
                        writer.Write(v);
                    }

                    foreach (var row in c.Rows)
                    {
                        // sample.cu's SampleParams, as CudaBackend uploads them.
                        writer.Write(row.IsGreedy ? 0f : (float)(1.0 / row.Temperature));
                        writer.Write(row.TopK);
                        writer.Write(row.TopP);
                        writer.Write(row.MinP);
                        writer.Write(row.U);
                    }
                }

                (code, output) = ExternalProcess.Run(exe, input, result, "64");
                Assert.True(code == 0, $"{c.Name}: the emulated kernel failed:\n{output}");
                var bytes = File.ReadAllBytes(result);
                var ids = new int[c.Rows.Length];
                Buffer.BlockCopy(bytes, 0, ids, 0, bytes.Length);

                var comparison = SampleCheck.Compare(c, ids);
                Assert.True(comparison.Passed, comparison.ToString());
                for (var r = 0; r < ids.Length; r++)
                {
                    var expected = SampleTests.Definition(c.Logits.AsSpan(r * c.Vocab, c.Vocab), c.Rows[r]);
                    Assert.True(expected == ids[r], $"{c.Name}, row {r} {c.Rows[r]}: definition {expected}, kernel {ids[r]}");
                    rowsChecked++;
                }
            }

            Assert.Equal(8 * 80, rowsChecked);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [GeneratedRegex(@"\basm\s*(volatile\s*)?\(")]
    private static partial Regex InlineAsm();
}
