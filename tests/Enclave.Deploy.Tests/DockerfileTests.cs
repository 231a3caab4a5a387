using Enclave.Deploy.Tests.Support;

namespace Enclave.Deploy.Tests;

/// <summary>
/// deploy/docker: no container engine runs on the build machines, so the Dockerfiles are checked as text, parsed
/// into instructions: a multi-stage build with the SDK only in the build stage, every path they copy present in
/// the build context, a non-root user, the health check on /health and the data directory as a volume.
/// </summary>
public sealed class DockerfileTests
{
    private sealed record Instruction(string Keyword, string Arguments);

    private static List<Instruction> Parse(string path)
    {
        var instructions = new List<Instruction>();
        var pending = string.Empty;
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.StartsWith('#') || (line.Length == 0 && pending.Length == 0))
            {
                continue;
            }

            if (line.EndsWith('\\'))
            {
                pending += line[..^1] + " ";
                continue;
            }

            var full = (pending + line).Trim();
            pending = string.Empty;
            if (full.Length == 0)
            {
                continue;
            }

            var space = full.IndexOf(' ', StringComparison.Ordinal);
            instructions.Add(new Instruction(full[..space].ToUpperInvariant(), full[(space + 1)..].Trim()));
        }

        Assert.Empty(pending);
        return instructions;
    }

    private static IEnumerable<string> IgnoredPatterns() =>
        File.ReadAllLines(ExternalTool.Repo(".dockerignore")).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'));

    [Theory]
    [InlineData("Dockerfile.cpu", "mcr.microsoft.com/dotnet/aspnet:10.0")]
    [InlineData("Dockerfile.cuda", "nvidia/cuda:12.8.1-runtime-ubuntu24.04")]
    public void TheImageIsBuiltInStagesAndRunsUnprivilegedWithAHealthCheck(string file, string runtimeBase)
    {
        var instructions = Parse(ExternalTool.Repo("deploy", "docker", file));
        var known = new HashSet<string> { "FROM", "WORKDIR", "COPY", "RUN", "ENV", "VOLUME", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "ARG", "LABEL" };
        Assert.All(instructions, i => Assert.Contains(i.Keyword, known));

        var stages = instructions.Where(i => i.Keyword == "FROM").Select(i => i.Arguments.Split(' ')).ToList();
        Assert.Equal(2, stages.Count);
        Assert.Equal(["mcr.microsoft.com/dotnet/sdk:10.0", "AS", "build"], stages[0]);
        Assert.Equal(runtimeBase, stages[1][0]);

        var runtimeStart = instructions.FindLastIndex(i => i.Keyword == "FROM");
        var build = instructions[..runtimeStart];
        var runtime = instructions[runtimeStart..];

        // The build stage publishes the CLI project from sources it copied, all present in the build context.
        var ignored = IgnoredPatterns().ToList();
        foreach (var copy in build.Where(i => i.Keyword == "COPY"))
        {
            var parts = copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (var source in parts[..^1])
            {
                Assert.True(File.Exists(ExternalTool.Repo(source)) || Directory.Exists(ExternalTool.Repo(source)), $"{file}: COPY {source} is not in the repository");
                Assert.DoesNotContain(ignored, p => source.TrimEnd('/').Equals(p.TrimEnd('/'), StringComparison.Ordinal));
            }
        }

        var publish = Assert.Single(build, i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet publish", StringComparison.Ordinal));
        var project = publish.Arguments.Split(' ').Single(a => a.EndsWith(".csproj", StringComparison.Ordinal));
        Assert.True(File.Exists(ExternalTool.Repo(project)), project);
        // The CLI embeds the systemd unit from deploy/systemd, so the build stage must copy it.
        Assert.Contains(build, i => i.Keyword == "COPY" && i.Arguments.StartsWith("deploy/systemd/", StringComparison.Ordinal));

        // The runtime stage takes only the published output, never the SDK.
        Assert.Contains(runtime, i => i.Keyword == "COPY" && i.Arguments == "--from=build /app /opt/enclave");
        Assert.DoesNotContain(runtime, i => i.Arguments.Contains("dotnet/sdk", StringComparison.Ordinal));

        var user = Assert.Single(runtime, i => i.Keyword == "USER").Arguments;
        Assert.Equal("10001:10001", user); // the chart's runAsUser
        var userIndex = runtime.FindIndex(i => i.Keyword == "USER");
        Assert.True(runtime.FindLastIndex(i => i.Keyword == "RUN") < userIndex, "nothing may run as root after USER");
        Assert.Contains(runtime, i => i.Keyword == "RUN" && i.Arguments.Contains("useradd --system --uid 10001", StringComparison.Ordinal));

        var env = string.Join(' ', runtime.Where(i => i.Keyword == "ENV").Select(i => i.Arguments));
        Assert.Contains("ENCLAVE_HOME=/var/lib/enclave", env, StringComparison.Ordinal);
        Assert.Equal("[\"/var/lib/enclave\"]", Assert.Single(runtime, i => i.Keyword == "VOLUME").Arguments);
        Assert.Equal("8000", Assert.Single(runtime, i => i.Keyword == "EXPOSE").Arguments);
        var health = Assert.Single(runtime, i => i.Keyword == "HEALTHCHECK").Arguments;
        Assert.Contains("CMD curl -fsS http://127.0.0.1:8000/health", health, StringComparison.Ordinal);
        Assert.Contains(runtime, i => i.Keyword == "RUN" && i.Arguments.Contains("curl", StringComparison.Ordinal));
        Assert.Equal("[\"/opt/enclave/enclave\"]", Assert.Single(runtime, i => i.Keyword == "ENTRYPOINT").Arguments);

        if (file == "Dockerfile.cuda")
        {
            // NVML (GPU metrics) is mounted into the container only with the utility capability.
            Assert.Contains("NVIDIA_DRIVER_CAPABILITIES=compute,utility", env, StringComparison.Ordinal);
            Assert.Contains("--self-contained", publish.Arguments, StringComparison.Ordinal);
        }
    }
}
