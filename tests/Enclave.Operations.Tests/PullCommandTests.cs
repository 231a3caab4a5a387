using System.CommandLine;
using Enclave.Engine.Tests.Support;
using Enclave.Operations.Cli;
using Enclave.Operations.Registry;
using Enclave.Operations.Tests.Support;

namespace Enclave.Operations.Tests;

/// <summary>The commands as the enclave root runs them, on ENCLAVE_HOME and HF_ENDPOINT (process-wide, so not in parallel).</summary>
[Collection(nameof(EnvironmentCollection))]
public sealed class PullCommandTests
{
    private static RootCommand Root()
    {
        var root = new RootCommand();
        foreach (var c in OperationsCommands.Create())
        {
            root.Subcommands.Add(c);
        }

        return root;
    }

    [Fact]
    public async Task PullHonoursHfEndpointAndTheStoreCommandsSeeTheModel()
    {
        using var home = new TempDir();
        await using var hub = await FixtureHub.StartAsync("enclave-test/tiny-qwen3", Fixtures.Model("tiny-qwen3"));
        var oldHome = Environment.GetEnvironmentVariable("ENCLAVE_HOME");
        var oldEndpoint = Environment.GetEnvironmentVariable("HF_ENDPOINT");
        Environment.SetEnvironmentVariable("ENCLAVE_HOME", home.Path);
        Environment.SetEnvironmentVariable("HF_ENDPOINT", hub.Endpoint.ToString());
        try
        {
            var output = new StringWriter();
            var config = new InvocationConfiguration { Output = output, EnableDefaultExceptionHandler = false };
            Assert.Equal(0, await Root().Parse(["pull", "enclave-test/tiny-qwen3", "--include", "*.safetensors", "--include", "*.json"]).InvokeAsync(config));
            Assert.Contains($"Installed tiny-qwen3 (6 files", output.ToString());
            Assert.Contains(FixtureHub.Commit, output.ToString());

            Assert.Equal(0, await Root().Parse(["models", "list", "--json"]).InvokeAsync(config));
            Assert.Contains("\"name\": \"tiny-qwen3\"", output.ToString());
            Assert.Equal(0, await Root().Parse(["models", "verify", "tiny-qwen3"]).InvokeAsync(config));

            File.AppendAllText(Path.Combine(new ModelStore(home.Path).PathOf("tiny-qwen3"), "config.json"), "\n");
            var errors = new StringWriter();
            Assert.Equal(1, await Root().Parse(["models", "verify", "tiny-qwen3"]).InvokeAsync(new InvocationConfiguration { Output = output, Error = errors }));
            Assert.Contains("FAILED config.json: size", errors.ToString());

            Assert.Equal(0, await Root().Parse(["models", "rm", "tiny-qwen3"]).InvokeAsync(config));
            Assert.Empty(new ModelStore(home.Path).List());
        }
        finally
        {
            Environment.SetEnvironmentVariable("ENCLAVE_HOME", oldHome);
            Environment.SetEnvironmentVariable("HF_ENDPOINT", oldEndpoint);
        }
    }

    [Fact]
    public void EndpointResolution()
    {
        var old = Environment.GetEnvironmentVariable("HF_ENDPOINT");
        try
        {
            Environment.SetEnvironmentVariable("HF_ENDPOINT", null);
            Assert.Equal("https://huggingface.co/", HubClient.ResolveEndpoint(null).ToString());
            Environment.SetEnvironmentVariable("HF_ENDPOINT", "http://mirror.internal:8080");
            Assert.Equal("http://mirror.internal:8080/", HubClient.ResolveEndpoint(null).ToString());
            Assert.Equal("https://hub.example/", HubClient.ResolveEndpoint("https://hub.example").ToString()); // --endpoint wins
            Assert.Throws<ArgumentException>(() => HubClient.ResolveEndpoint("ftp://x"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_ENDPOINT", old);
        }
    }
}

[CollectionDefinition(nameof(EnvironmentCollection), DisableParallelization = true)]
public sealed class EnvironmentCollection;
