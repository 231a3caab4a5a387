using System.Text.RegularExpressions;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Cuda.Monitoring;
using Enclave.Engine.Tests.Support;
using Enclave.Server.Hosting;

namespace Enclave.Deploy.Tests.Support;

/// <summary>
/// The metric names a real <c>enclave serve</c> exports, read from its /metrics (with one GPU reading given, so the
/// GPU families are registered as on a GPU host). Dashboards and alert rules are checked against these, so a
/// renamed metric breaks the test rather than a silent panel.
/// </summary>
public static partial class ExportedMetrics
{
    private static readonly Lazy<Task<IReadOnlySet<string>>> Names = new(ScrapeAsync);

    private sealed class OneGpu : IGpuSampleSource
    {
        public IReadOnlyList<GpuSample> Read() =>
            [new GpuSample(0, "GPU-00000000-0000-0000-0000-000000000000", "NVIDIA H100 80GB HBM3", 0.5, 0.2, 1L << 30, 80L << 30, 40, 300, 0, 0, [])];
    }

    public static Task<IReadOnlySet<string>> GetAsync() => Names.Value;

    [GeneratedRegex(@"^# TYPE (\S+) (counter|gauge|histogram)$", RegexOptions.Multiline)]
    private static partial Regex TypeLine();

    private static async Task<IReadOnlySet<string>> ScrapeAsync()
    {
        var options = new ServerOptions
        {
            Host = "127.0.0.1",
            Port = 0,
            NoAuth = true,
            BackendFactory = _ => new CpuBackend(threads: 1),
            GpuSamples = () => new OneGpu(),
        };
        options.Models.Add(new ModelSpec("tiny-qwen3", Fixtures.Model("tiny-qwen3")));
        await using var server = await EnclaveServer.StartAsync(options, _ => { });
        await server.Loading;
        using var http = new HttpClient { BaseAddress = server.Address };
        var text = await http.GetStringAsync("metrics");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match m in TypeLine().Matches(text))
        {
            var name = m.Groups[1].Value;
            if (m.Groups[2].Value == "histogram")
            {
                names.Add(name + "_bucket");
                names.Add(name + "_sum");
                names.Add(name + "_count");
            }
            else
            {
                names.Add(name);
            }
        }

        return names;
    }
}
