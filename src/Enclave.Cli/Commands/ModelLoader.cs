using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;
using Microsoft.Extensions.Logging.Abstractions;

namespace Enclave.Cli.Commands;

/// <summary>Loads a model directory for the CLI commands, turning load errors into one clear line.</summary>
internal static class ModelLoader
{
    public static LanguageModel Load(string directory, string device, int threads, EngineOptions options, bool dummyWeights = false, bool enforceEager = false)
    {
        directory = StoreModels.Resolve(directory) ?? directory;
        if (!Directory.Exists(directory) && !Enclave.Engine.Formats.Gguf.GgufModel.IsGgufPath(directory))
        {
            throw new CliException($"--model {directory}: no such directory or .gguf file, nor an installed model of that name");
        }

        var backend = CommonOptions.CreateBackend(device, threads, enforceEager);
        try
        {
            return LanguageModel.Load(directory, backend, options, NullLogger.Instance, ownsBackend: true, dummyWeights: dummyWeights, openWeights: d => StoreModels.OpenEncrypted(d) ?? SafetensorsCheckpoint.Open(d));
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>The publisher's defaults from generation_config.json: sampled only when it says do_sample.</summary>
    public static SamplingParams SamplingDefaults(LanguageModel lm)
    {
        var g = lm.GenerationConfig;
        var sample = g.DoSample == true;
        return new SamplingParams
        {
            Temperature = sample ? g.Temperature ?? 1.0 : 0,
            TopP = sample ? g.TopP ?? 1.0 : 1.0,
            TopK = sample ? g.TopK ?? 0 : 0,
            RepetitionPenalty = g.RepetitionPenalty ?? 1.0,
        };
    }
}
