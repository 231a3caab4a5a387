using System.Diagnostics;
using Enclave.Engine.Tests.Support;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>The official openai npm package against the real server (node/client.mjs).</summary>
[Collection(SharedServerCollection.Name)]
public sealed class NodeClientTests(SharedServer shared)
{
    private static async Task<(int Code, string Output)> Run(string file, string arguments, string directory)
    {
        var start = new ProcessStartInfo(file, arguments) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    [Fact]
    public async Task TheOpenAiNpmPackageWorksAgainstTheServer()
    {
        var directory = Path.Combine(Fixtures.RepositoryRoot, "tests", "Enclave.Server.Tests", "node");
        if (!File.Exists(Path.Combine(directory, "node_modules", "openai", "package.json")))
        {
            var (installed, log) = await Run("bash", "install.sh", directory);
            Assert.True(installed == 0, "node/install.sh failed:\n" + log);
        }

        var (code, output) = await Run("node", $"client.mjs {shared.Server.Address.ToString().TrimEnd('/')} tiny-qwen3", directory);
        Assert.True(code == 0, output);
        Assert.Contains("node client: all 7 checks passed", output);
    }
}
