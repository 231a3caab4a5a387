using System.CommandLine;
using System.Diagnostics;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;

namespace Enclave.Cli.Commands;

/// <summary>
/// <c>enclave bench embed</c>: encoder throughput (sequences/s) for a batch of fixed-length sequences, on a real
/// checkpoint or on random weights of a config.json's shape. Sequences are packed into one forward pass, as the
/// embedding API runs them.
/// </summary>
internal static class BenchEmbedCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Embedding or rerank model directory" };
        var dummy = new Option<FileInfo?>("--dummy") { Description = "A config.json: random weights of that shape (e.g. tools/bench/bge-m3.json)" };
        var batch = new Option<int>("--batch") { Description = "Sequences per forward pass", DefaultValueFactory = _ => 32 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence, special tokens included", DefaultValueFactory = _ => 128 };
        var passes = new Option<int>("--passes") { Description = "Timed forward passes", DefaultValueFactory = _ => 3 };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("embed", "Measure embedding-model throughput (sequences/s)") { model, dummy, batch, seqLen, passes, device, threads };
        command.SetAction(result =>
        {
            var dir = result.GetValue(model);
            var config = result.GetValue(dummy);
            if ((dir is null) == (config is null))
            {
                throw new CliException("give exactly one of --model DIR or --dummy CONFIG.json");
            }

            int b = result.GetValue(batch), l = result.GetValue(seqLen), n = result.GetValue(passes);
            if (b < 1 || l < 1 || n < 1)
            {
                throw new CliException("--batch, --seq-len and --passes must be ≥ 1");
            }

            if (config is { Exists: false })
            {
                throw new CliException($"--dummy {config.FullName}: file not found");
            }

            var load = Stopwatch.StartNew();
            var modelConfig = ModelConfig.Load(config?.FullName ?? dir!);
            using var backend = EncoderBackend.Create(result.GetValue(device)!, result.GetValue(threads));
            using IWeightSource weights = config is not null ? DummyWeights.Create(modelConfig) : SafetensorsCheckpoint.Open(dir!);
            using var encoder = ModelRegistry.CreateEncoder(modelConfig, weights, backend);
            load.Stop();
            if (l > encoder.MaxSequenceLength)
            {
                throw new CliException($"--seq-len {l} exceeds the model's {encoder.MaxSequenceLength} positions");
            }

            // Random ids; avoid the padding id so XLM-R positions run 2..L+1 as for real text.
            var random = new Random(1234);
            var pad = modelConfig.Raw["pad_token_id"]?.GetValue<int>() ?? -1;
            int[][] sequences = [.. Enumerable.Range(0, b).Select(_ => Enumerable.Range(0, l).Select(_ =>
            {
                int id;
                do
                {
                    id = random.Next(modelConfig.VocabSize);
                }
                while (id == pad);
                return id;
            }).ToArray())];
            var packed = EncoderBatch.Pack(sequences);
            var host = new float[packed.TokenCount * modelConfig.HiddenSize];

            void Pass()
            {
                if (encoder.NumLabels > 0)
                {
                    encoder.Classify(packed);
                }
                else
                {
                    backend.Download(encoder.Forward(packed), host);
                }
            }

            Pass(); // warm-up: JIT and page-in of the weights
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < n; i++)
            {
                Pass();
            }

            clock.Stop();
            var seconds = clock.Elapsed.TotalSeconds / n;
            int hidden = modelConfig.HiddenSize, inner = modelConfig.IntermediateSize, layers = modelConfig.NumHiddenLayers;
            // Multiply-adds per token: 4 H×H projections and 2 H×I MLP matrices, plus attention's q·k and p·v over L keys.
            var flopsPerPass = 2.0 * layers * b * l * ((4.0 * hidden * hidden) + (2.0 * hidden * inner) + (2.0 * l * hidden));
            Console.WriteLine($"model        {modelConfig.Architecture} ({(config is not null ? "dummy weights from " + config.Name : dir)})");
            Console.WriteLine($"backend      {backend.Name}");
            Console.WriteLine($"shape        hidden {hidden}, layers {layers}, heads {modelConfig.NumAttentionHeads}, intermediate {inner}, vocab {modelConfig.VocabSize}");
            Console.WriteLine($"weights      {encoder.WeightBytes / 1e9:F3} GB; loaded in {load.Elapsed.TotalSeconds:F2} s");
            Console.WriteLine($"workload     batch {b} × {l} tokens per pass, {n} timed passes");
            Console.WriteLine($"throughput   {b / seconds:F2} sequences/s, {b * l / seconds:F0} tokens/s, {seconds * 1000:F0} ms per pass");
            Console.WriteLine($"compute      {flopsPerPass / seconds / 1e9:F1} GFLOP/s");
            Console.WriteLine($"memory       {Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0:F0} MiB peak resident");
            return 0;
        });
        return command;
    }
}
