using System.Text;
using System.Text.Json;
using Enclave.Gateway.Pii;
using Xunit.Abstractions;

namespace Enclave.Gateway.Tests;

public sealed class PiiTests(ITestOutputHelper output)
{
    private static readonly PiiDetector Detector = new();

    [Theory]
    [InlineData("11010519491231002X", true)]
    [InlineData("110105194912310021", false)]
    [InlineData("110105194902300025", false)]
    [InlineData("110105491231002", true)]
    [InlineData("110105491331002", false)]
    [InlineData("010105194912310020", false)]
    public void Resident_id_needs_checksum_and_a_real_birth_date(string id, bool valid) =>
        Assert.Equal(valid, PiiDetector.IsValidResidentId(id));

    [Theory]
    [InlineData("4111111111111111", true)]
    [InlineData("4111111111111112", false)]
    [InlineData("6222020200112345678", false)]
    public void Luhn(string digits, bool valid) => Assert.Equal(valid, PiiDetector.LuhnValid(digits));

    [Theory]
    [InlineData("call 13800138000 now", "mobile", "13800138000")]
    [InlineData("电话+86 139-1234-5678。", "mobile", "+86 139-1234-5678")]
    [InlineData("office 010-62345678", "landline", "010-62345678")]
    [InlineData("card 4111 1111 1111 1111 ok", "bank_card", "4111 1111 1111 1111")]
    [InlineData("mail a.b@example.com.", "email", "a.b@example.com")]
    [InlineData("from 192.168.1.20,", "ipv4", "192.168.1.20")]
    [InlineData("host 2001:db8::1 up", "ipv6", "2001:db8::1")]
    [InlineData("护照E12345678有效", "passport", "E12345678")]
    [InlineData("身份证11010519491231002X。", "cn_id", "11010519491231002X")]
    public void Finds_each_type(string text, string type, string value)
    {
        var m = Assert.Single(Detector.Detect(text));
        Assert.Equal(type, m.Type);
        Assert.Equal(value, m.Value);
    }

    [Theory]
    [InlineData("order 110105194912310021 shipped")]
    [InlineData("at 12:30:45 the job ended")]
    [InlineData("version 1.2.3 released")]
    [InlineData("value 999.1.1.1 invalid")]
    [InlineData("ticket 12345678901 closed")]
    [InlineData("card 4111111111111112 declined")]
    public void Ignores_near_misses(string text) => Assert.Empty(Detector.Detect(text));

    [Fact]
    public void Masks_and_tags()
    {
        const string text = "手机13800138000，邮箱zhang@example.cn，身份证11010519491231002X";
        Assert.Equal("手机138****8000，邮箱z***@example.cn，身份证110105********002X", Detector.Redact(text, PiiActions.Mask));
        Assert.Equal("手机[MOBILE]，邮箱[EMAIL]，身份证[CN_ID]", Detector.Redact(text, PiiActions.Tag));
        Assert.Equal(text, Detector.Redact(text, PiiActions.Allow));
    }

    [Fact]
    public void Custom_patterns_and_keywords()
    {
        var d = new PiiDetector();
        d.AddCustomPattern("employee", @"EMP-\d{6}");
        d.AddKeyword("Project Falcon");
        var found = d.Detect("EMP-123456 works on project falcon");
        Assert.Equal(["custom", "keyword"], found.Select(f => f.Type).ToArray());
        Assert.Equal("[CUSTOM] works on [KEYWORD]", d.Redact("EMP-123456 works on project falcon", PiiActions.Tag));
    }

    /// <summary>
    /// Entity-level precision and recall on the committed labelled corpus (tests/.../Data/pii-corpus.jsonl).
    /// The figures are printed and quoted in docs/security.md; the floor guards against regressions.
    /// </summary>
    [Fact]
    public void Precision_and_recall_on_the_labelled_corpus()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Data", "pii-corpus.jsonl");
        var lines = File.ReadAllLines(path);
        Assert.True(lines.Length >= 500, "the labelled set must hold at least 500 snippets");
        var stats = new SortedDictionary<string, int[]>(StringComparer.Ordinal);
        int[] Stat(string t) => stats.TryGetValue(t, out var s) ? s : stats[t] = new int[3];
        var langs = new HashSet<string>();
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            langs.Add(root.GetProperty("lang").GetString()!);
            var expected = root.GetProperty("entities").EnumerateArray()
                .Select(e => (Type: e.GetProperty("type").GetString()!, Value: e.GetProperty("value").GetString()!)).ToList();
            var found = Detector.Detect(root.GetProperty("text").GetString()!).Select(m => (m.Type, m.Value)).ToList();
            foreach (var f in found)
            {
                if (expected.Remove(f))
                {
                    Stat(f.Type)[0]++;
                }
                else
                {
                    Stat(f.Type)[1]++;
                }
            }

            foreach (var miss in expected)
            {
                Stat(miss.Type)[2]++;
            }
        }

        Assert.Equal(["en", "zh"], langs.OrderBy(l => l).ToArray());
        var report = new StringBuilder("| type | TP | FP | FN | precision | recall |\n| --- | --- | --- | --- | --- | --- |\n");
        int tp = 0, fp = 0, fn = 0;
        foreach (var (type, s) in stats)
        {
            tp += s[0];
            fp += s[1];
            fn += s[2];
            report.Append($"| {type} | {s[0]} | {s[1]} | {s[2]} | {Ratio(s[0], s[0] + s[1])} | {Ratio(s[0], s[0] + s[2])} |\n");
        }

        report.Append($"| all | {tp} | {fp} | {fn} | {Ratio(tp, tp + fp)} | {Ratio(tp, tp + fn)} |\n");
        output.WriteLine(report.ToString());
        Assert.True((double)tp / (tp + fp) >= 0.95, report.ToString());
        Assert.True((double)tp / (tp + fn) >= 0.95, report.ToString());
    }

    private static string Ratio(int a, int b) => b == 0 ? "-" : ((double)a / b).ToString("0.000", System.Globalization.CultureInfo.InvariantCulture);
}
