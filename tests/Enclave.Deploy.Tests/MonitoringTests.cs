using System.Text.Json;
using Enclave.Deploy.Tests.Support;
using YamlDotNet.RepresentationModel;

namespace Enclave.Deploy.Tests;

/// <summary>
/// deploy/monitoring: the alert rules pass promtool's checks and their own unit tests, and the rules and the
/// Grafana dashboard only query metrics a real server exports.
/// </summary>
public sealed class MonitoringTests
{
    private static readonly string Rules = ExternalTool.Repo("deploy", "monitoring", "enclave-alerts.yml");
    private static readonly string RuleTests = ExternalTool.Repo("deploy", "monitoring", "tests", "enclave-alerts.test.yml");
    private static readonly string Dashboard = ExternalTool.Repo("deploy", "monitoring", "grafana", "enclave-dashboard.json");

    private sealed record Rule(string Name, bool IsAlert, string Expr, string? For);

    private static List<Rule> ReadRules()
    {
        var yaml = new YamlStream();
        using (var reader = new StreamReader(Rules))
        {
            yaml.Load(reader);
        }

        var rules = new List<Rule>();
        var root = (YamlMappingNode)yaml.Documents[0].RootNode;
        foreach (var group in ((YamlSequenceNode)root["groups"]).Cast<YamlMappingNode>())
        {
            foreach (var rule in ((YamlSequenceNode)group["rules"]).Cast<YamlMappingNode>())
            {
                string? Get(string key) => rule.Children.TryGetValue(new YamlScalarNode(key), out var v) ? ((YamlScalarNode)v).Value : null;
                var alert = Get("alert");
                rules.Add(new Rule(alert ?? Get("record")!, alert is not null, Get("expr")!, Get("for")));
            }
        }

        return rules;
    }

    [PromtoolFact]
    public void TheAlertRulesPassPromtoolCheck()
    {
        var (code, stdout, stderr) = ExternalTool.Run(ExternalTool.Promtool!, null, "check", "rules", Rules);
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("SUCCESS", stdout + stderr, StringComparison.Ordinal);
    }

    [PromtoolFact]
    public void TheAlertRulesPassTheirPromtoolUnitTests()
    {
        var (code, stdout, stderr) = ExternalTool.Run(ExternalTool.Promtool!, null, "test", "rules", RuleTests);
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("SUCCESS", stdout + stderr, StringComparison.Ordinal);
    }

    [PromtoolFact]
    public void PromtoolRejectsARuleFileWithAnError()
    {
        var dir = Directory.CreateTempSubdirectory("enclave-rules-");
        try
        {
            var broken = File.ReadAllText(Rules).Replace("vllm:kv_cache_usage_perc > 0.95", "vllm:kv_cache_usage_perc > > 0.95", StringComparison.Ordinal);
            Assert.NotEqual(File.ReadAllText(Rules), broken);
            var path = Path.Combine(dir.FullName, "broken.yml");
            File.WriteAllText(path, broken);
            var (code, stdout, stderr) = ExternalTool.Run(ExternalTool.Promtool!, null, "check", "rules", path);
            Assert.NotEqual(0, code);
            Assert.Contains("FAILED", stdout + stderr, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task EveryRuleQueriesOnlyExportedOrRecordedMetrics()
    {
        var exported = await ExportedMetrics.GetAsync();
        var rules = ReadRules();
        var recorded = rules.Where(r => !r.IsAlert).Select(r => r.Name).ToHashSet();
        foreach (var rule in rules)
        {
            var names = PromQl.MetricNames(rule.Expr);
            Assert.NotEmpty(names);
            foreach (var name in names)
            {
                // `up` is Prometheus's own series for every scrape target.
                Assert.True(exported.Contains(name) || recorded.Contains(name) || name == "up", $"rule {rule.Name} queries {name}, which enclave serve does not export");
            }
        }
    }

    [Theory]
    [InlineData("EnclaveGpuMemoryHigh", "enclave_gpu_memory_used_bytes / enclave_gpu_memory_total_bytes > 0.9", "5m")]
    [InlineData("EnclaveGpuTemperatureHigh", "enclave_gpu_temperature_celsius > 85", "2m")]
    [InlineData("EnclaveTimeToFirstTokenOverSlo", "enclave:time_to_first_token_seconds:p99_rate5m > 0.2", "5m")]
    [InlineData("EnclaveAvailabilityBelowSlo", "enclave:http_availability:ratio_rate1h < 0.999", "5m")]
    [InlineData("EnclaveHighErrorRate", "enclave:http_5xx:ratio_rate5m > 0.001", "5m")]
    [InlineData("EnclaveQueueBacklog", "vllm:num_requests_waiting > 10", "5m")]
    [InlineData("EnclaveKvCacheNearlyFull", "vllm:kv_cache_usage_perc > 0.95", "5m")]
    public void TheGuidesThresholdsAreTheDefaults(string alert, string expr, string duration)
    {
        var rule = Assert.Single(ReadRules(), r => r.Name == alert);
        Assert.True(rule.IsAlert);
        Assert.Equal(expr, rule.Expr.Trim());
        Assert.Equal(duration, rule.For);
    }

    [Fact]
    public async Task TheDashboardIsAWellFormedGrafanaDashboardOverExportedMetrics()
    {
        var exported = await ExportedMetrics.GetAsync();
        using var doc = JsonDocument.Parse(File.ReadAllText(Dashboard));
        var root = doc.RootElement;
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("uid").GetString()));
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("title").GetString()));
        Assert.True(root.GetProperty("schemaVersion").GetInt32() >= 36, "Grafana 9+ schema expected");

        // The datasource is a variable, so the dashboard imports into any Grafana whatever its Prometheus is called.
        var variables = root.GetProperty("templating").GetProperty("list").EnumerateArray().ToList();
        var datasource = Assert.Single(variables, v => v.GetProperty("type").GetString() == "datasource");
        Assert.Equal("prometheus", datasource.GetProperty("query").GetString());
        var datasourceUid = "${" + datasource.GetProperty("name").GetString() + "}";
        var variableNames = variables.Select(v => v.GetProperty("name").GetString()!).ToHashSet();
        Assert.Equal(variables.Count, variableNames.Count);
        foreach (var v in variables.Where(v => v.GetProperty("type").GetString() == "query"))
        {
            Assert.Equal(datasourceUid, v.GetProperty("datasource").GetProperty("uid").GetString());
            var query = v.GetProperty("query").GetProperty("query").GetString()!;
            var inner = query[(query.IndexOf('(', StringComparison.Ordinal) + 1)..query.LastIndexOf(',')];
            Assert.All(PromQl.MetricNames(inner), n => Assert.Contains(n, exported));
        }

        var panels = root.GetProperty("panels").EnumerateArray()
            .SelectMany(p => p.TryGetProperty("panels", out var nested) ? [p, .. nested.EnumerateArray()] : new[] { p })
            .ToList();
        var ids = panels.Select(p => p.GetProperty("id").GetInt32()).ToList();
        Assert.Equal(ids.Count, ids.Distinct().Count());

        var occupied = new HashSet<(int X, int Y)>();
        var queried = new HashSet<string>(StringComparer.Ordinal);
        foreach (var panel in panels)
        {
            var title = panel.GetProperty("title").GetString();
            var grid = panel.GetProperty("gridPos");
            int x = grid.GetProperty("x").GetInt32(), y = grid.GetProperty("y").GetInt32(), w = grid.GetProperty("w").GetInt32(), h = grid.GetProperty("h").GetInt32();
            Assert.True(x >= 0 && w > 0 && x + w <= 24 && h > 0, $"panel {title}: gridPos {x},{y} {w}x{h} leaves the 24-column grid");
            for (var cx = x; cx < x + w; cx++)
            {
                for (var cy = y; cy < y + h; cy++)
                {
                    Assert.True(occupied.Add((cx, cy)), $"panel {title} overlaps another at column {cx}, row {cy}");
                }
            }

            if (panel.GetProperty("type").GetString() == "row")
            {
                continue;
            }

            Assert.Equal(datasourceUid, panel.GetProperty("datasource").GetProperty("uid").GetString());
            var targets = panel.GetProperty("targets").EnumerateArray().ToList();
            Assert.NotEmpty(targets);
            Assert.Equal(targets.Count, targets.Select(t => t.GetProperty("refId").GetString()).Distinct().Count());
            foreach (var target in targets)
            {
                Assert.Equal(datasourceUid, target.GetProperty("datasource").GetProperty("uid").GetString());
                var expr = target.GetProperty("expr").GetString()!;
                foreach (var variable in System.Text.RegularExpressions.Regex.Matches(expr, @"\$(\w+)").Select(m => m.Groups[1].Value).Where(v => !v.StartsWith("__", StringComparison.Ordinal)))
                {
                    Assert.Contains(variable, variableNames);
                }

                var names = PromQl.MetricNames(expr);
                Assert.NotEmpty(names);
                foreach (var name in names)
                {
                    Assert.True(exported.Contains(name), $"panel '{title}' queries {name}, which enclave serve does not export");
                    queried.Add(name);
                }
            }
        }

        // The panels the guides ask for: requests, tokens/s, TTFT and TPOT percentiles, queue, KV cache, GPUs.
        foreach (var needed in new[]
        {
            "vllm:request_success_total", "enclave_http_requests_total", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
            "vllm:time_per_output_token_seconds_bucket", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "enclave_gpu_utilization_ratio",
            "enclave_gpu_memory_used_bytes", "enclave_gpu_temperature_celsius", "enclave_gpu_power_watts",
        })
        {
            Assert.Contains(needed, queried);
        }
    }

    [Fact]
    public void MetricNamesAreReadFromPromQl()
    {
        Assert.Equal(
            new[] { "vllm:time_to_first_token_seconds_bucket" },
            PromQl.MetricNames("histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket{job=~\"$job\",code=~\"5..\"}[$__rate_interval])))").Order());
        Assert.Equal(
            new[] { "enclave_gpu_memory_total_bytes", "enclave_gpu_memory_used_bytes", "up" },
            PromQl.MetricNames("enclave_gpu_memory_used_bytes / on (gpu) enclave_gpu_memory_total_bytes > 0.9 and up == 1").Order());
    }
}
