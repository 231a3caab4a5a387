using System.CommandLine;
using Enclave.Engine.Backends;
using Enclave.Engine.Cuda;

namespace Enclave.Cli.Commands;

/// <summary>Options several commands share, and what they resolve to.</summary>
internal static class CommonOptions
{
    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
        Required = required,
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "Where to run: auto (CUDA when a usable GPU is found, else CPU), cpu, cuda[:N], or reference (slow scalar yardstick)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>vLLM's flag: no CUDA graphs, every decode step launches its kernels one by one from the host.</summary>
    public static Option<bool> EnforceEager() => new("--enforce-eager")
    {
        Description = "On CUDA, launch every decode step op by op instead of replaying it as a recorded CUDA graph (slower; for debugging)",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>The data directory: ENCLAVE_HOME, else ~/.enclave. Created on first use.</summary>
    public static string DataDirectory()
    {
        var home = Enclave.Gateway.Store.EnclaveHome.Resolve();
        Directory.CreateDirectory(home);
        return home;
    }

    public static IBackend CreateBackend(string device, int threads, bool enforceEager = false)
    {
        try
        {
            return DeviceSelection.Create(device, threads, Console.Error.WriteLine, enforceEager);
        }
        catch (DeviceSelectionException e)
        {
            throw new CliException(e.Message);
        }
    }
}

/// <summary>A user error: printed as one line on stderr, exit code 2.</summary>
internal sealed class CliException(string message) : Exception(message);
