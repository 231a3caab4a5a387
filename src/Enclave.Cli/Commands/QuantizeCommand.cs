using System.CommandLine;
using System.Diagnostics;
using Enclave.Engine.Formats;
using Enclave.Engine.Formats.Gguf;
using Enclave.Engine.Models;

namespace Enclave.Cli.Commands;

/// <summary>
/// <c>enclave quantize</c>: writes a GGUF file from a safetensors checkpoint (or from random weights of a config's
/// shape, for benchmarks) in a float type, Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, or one of llama.cpp's K-quant mixtures.
/// </summary>
internal static class QuantizeCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "A Hugging Face model directory (config.json, safetensors, tokenizer.json)" };
        var dummy = new Option<FileInfo?>("--dummy") { Description = "A config.json: write random weights of that shape instead" };
        var to = new Option<string>("--to") { Description = $"Target type: {string.Join("|", GgufExport.Targets.Keys)}", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The GGUF file to write", Required = true };
        var command = new Command("quantize", "Write a GGUF file (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M, Q6_K) from a checkpoint") { model, dummy, to, output };
        command.SetAction(result =>
        {
            var dir = result.GetValue(model);
            var config = result.GetValue(dummy);
            if ((dir is null) == (config is null))
            {
                throw new CliException("give exactly one of --model DIR or --dummy CONFIG.json");
            }

            var target = result.GetRequiredValue(to).ToLowerInvariant();
            if (!GgufExport.Targets.ContainsKey(target))
            {
                throw new CliException($"--to {target}: unknown type (supported: {string.Join(", ", GgufExport.Targets.Keys)})");
            }

            var outputPath = result.GetRequiredValue(output);
            if (!outputPath.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            {
                throw new CliException($"-o {outputPath}: the output file must end in .gguf");
            }

            var configPath = config?.FullName ?? Path.Combine(dir!, "config.json");
            if (!File.Exists(configPath))
            {
                throw new CliException($"{configPath}: file not found");
            }

            var modelConfig = ModelConfig.Load(configPath);
            ModelRegistry.EnsureSupported(modelConfig);
            var watch = Stopwatch.StartNew();
            using IWeightSource weights = config is not null ? DummyWeights.Create(modelConfig) : SafetensorsCheckpoint.Open(dir!);
            var name = config is not null ? Path.GetFileNameWithoutExtension(config.Name) : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir!)));
            try
            {
                GgufExport.Write(modelConfig, weights, dir, target, outputPath, name);
            }
            catch (Exception e) when (e is NotSupportedException or ArgumentException)
            {
                throw new CliException(e.Message);
            }

            Console.WriteLine($"wrote {outputPath} ({new FileInfo(outputPath).Length / 1048576.0:F1} MiB, {target}) in {watch.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }
}
