using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Cli;

/// <summary>The <c>enclave</c> command as scripts use it: a real process, stdout and exit codes.</summary>
public sealed class CliTests
{
    internal static (int ExitCode, string Stdout, string Stderr) Enclave(string? stdin, params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "enclave.dll");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            StandardOutputEncoding = new UTF8Encoding(false),
            StandardErrorEncoding = new UTF8Encoding(false),
            StandardInputEncoding = new UTF8Encoding(false),
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["ENCLAVE_HOME"] = Path.Combine(Path.GetTempPath(), "enclave-cli-tests");
        using var process = Process.Start(psi)!;
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
        }

        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("enclave did not finish in 120 s");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    [Theory]
    [InlineData("tiny-qwen2-r1")]
    [InlineData("tiny-llama3")]
    public void RunJsonGivesTheReferenceGreedyContinuationOfAChat(string model)
    {
        var reference = Fixtures.LoadReference(model);
        var chat = reference.Cases.First(c => c.Kind == "chat");
        var userText = chat.Messages.EnumerateArray().Last().GetProperty("content").GetString()!;
        Assume(chat.Messages.GetArrayLength() == 1);
        var (code, stdout, stderr) = Enclave(null, "run", "--model", Fixtures.Model(model), "--prompt", userText, "--max-tokens", "12", "--json", "--device", "cpu");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal(chat.PromptIds, root.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()));
        var completion = root.GetProperty("completion_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var eos = new HashSet<int>(Fixtures.EosIds(model));
        for (var i = 0; i < completion.Length && chat.GreedyMargins[i] >= 1e-3; i++)
        {
            Assert.Equal(chat.GreedyIds[i], completion[i]);
            if (eos.Contains(completion[i]))
            {
                Assert.Equal("stop", root.GetProperty("finish_reason").GetString());
                return;
            }
        }

        Assert.Equal("length", root.GetProperty("finish_reason").GetString());
    }

    private static void Assume(bool condition) => Assert.True(condition, "fixture shape changed");

    [Fact]
    public void TokenizeReadsStdinAndWorksOnATokenizerOnlyFolder()
    {
        var dir = Directory.CreateTempSubdirectory("enclave-tok-").FullName;
        try
        {
            File.Copy(Path.Combine(Fixtures.Model("tiny-qwen3"), "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
            File.Copy(Path.Combine(Fixtures.Model("tiny-qwen3"), "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
            var reference = Fixtures.LoadReference("tiny-qwen3").Cases.First(c => c.Kind == "raw");
            var (code, stdout, stderr) = Enclave(reference.Text, "tokenize", "--model", dir, "-");
            Assert.True(code == 0, stderr);
            Assert.Equal(reference.PromptIds, JsonSerializer.Deserialize<int[]>(stdout));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("tiny-qwen2-r1")]
    [InlineData("tiny-qwen3")]
    [InlineData("tiny-llama3")]
    public void RenderIsByteExactWithTheReferenceRendering(string model)
    {
        var chat = Fixtures.LoadReference(model).Cases.First(c => c.Kind == "chat" && c.Messages.GetArrayLength() == 2);
        var file = Path.GetTempFileName();
        File.WriteAllText(file, chat.Messages.GetRawText());
        var (code, stdout, stderr) = Enclave(null, "render", "--model", Fixtures.Model(model), "--messages", file);
        File.Delete(file);
        Assert.True(code == 0, stderr);
        Assert.Equal(chat.Rendered, stdout);
    }

    [Theory]
    [InlineData(new[] { "run", "--model", "/nonexistent/model", "--prompt", "x" }, "no such directory")]
    [InlineData(new[] { "run", "--model", "MODEL", "--prompt", "x", "--device", "cuda:99" }, "--device cuda:99 is not usable")]
    [InlineData(new[] { "run", "--model", "MODEL" }, "exactly one of --prompt or --prompt-file")]
    [InlineData(new[] { "run", "--model", "MODEL", "--prompt", "x", "--max-tokens", "100000" }, "maximum context length")]
    [InlineData(new[] { "run", "--model", "MODEL", "--prompt", "x", "--top-p", "0" }, "top_p")]
    [InlineData(new[] { "bench" }, "exactly one of --model DIR or --dummy")]
    public void UserErrorsPrintOneClearLineAndExitNonZero(string[] args, string expected)
    {
        var resolved = args.Select(a => a == "MODEL" ? Fixtures.Model("tiny-qwen3") : a).ToArray();
        var (code, _, stderr) = Enclave(null, resolved);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("   at ", stderr); // no stack trace
    }

    [Fact]
    public void QuantizeWritesAGgufThatRunChatAndBenchAccept()
    {
        var model = "tiny-qwen3";
        var output = Path.Combine(Path.GetTempPath(), $"enclave-cli-{Guid.NewGuid():N}.gguf");
        try
        {
            var (code, stdout, stderr) = Enclave(null, "quantize", "--model", Fixtures.Model(model), "--to", "f16", "-o", output);
            Assert.True(code == 0, stderr);
            Assert.Contains("wrote", stdout);

            // The checkpoint is F16, so the F16 file gives the reference's greedy chat continuation.
            var chat = Fixtures.LoadReference(model).Cases.First(c => c.Kind == "chat");
            var userText = chat.Messages.EnumerateArray().Last().GetProperty("content").GetString()!;
            (code, stdout, stderr) = Enclave(null, "run", "--model", output, "--prompt", userText, "--max-tokens", "6", "--json", "--device", "cpu");
            Assert.True(code == 0, stderr);
            using var doc = JsonDocument.Parse(stdout);
            Assert.Equal(chat.PromptIds, doc.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()));
            var completion = doc.RootElement.GetProperty("completion_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            for (var i = 0; i < completion.Length && chat.GreedyMargins[i] >= 1e-3; i++)
            {
                Assert.Equal(chat.GreedyIds[i], completion[i]);
            }

            (code, stdout, stderr) = Enclave(null, "bench", "--model", output, "--prompt-len", "8", "--gen-len", "4", "--device", "cpu");
            Assert.True(code == 0, stderr);
            Assert.Matches(@"decode\s+[\d.]+ tokens/s total", stdout);
            Assert.Matches(@"memory\s+\d+ MiB peak resident, \d+ MiB now \(file \d+ MiB", stdout);
        }
        finally
        {
            File.Delete(output);
        }
    }

    [Theory]
    [InlineData(new[] { "quantize", "--model", "MODEL", "--to", "q3_k", "-o", "x.gguf" }, "--to q3_k: unknown type")]
    [InlineData(new[] { "quantize", "--model", "MODEL", "--to", "q8_0", "-o", "x.bin" }, "must end in .gguf")]
    [InlineData(new[] { "quantize", "--to", "q8_0", "-o", "x.gguf" }, "exactly one of --model DIR or --dummy")]
    [InlineData(new[] { "run", "--model", "/nonexistent/model.gguf", "--prompt", "x" }, "no such directory or .gguf file")]
    public void QuantizeErrorsPrintOneClearLine(string[] args, string expected)
    {
        var resolved = args.Select(a => a == "MODEL" ? Fixtures.Model("tiny-qwen3") : a).ToArray();
        var (code, _, stderr) = Enclave(null, resolved);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public void BenchOnADummyConfigReportsThroughputAndTheRoofline()
    {
        var (code, stdout, stderr) = Enclave(null, "bench", "--dummy", Path.Combine(Fixtures.Model("tiny-llama3"), "config.json"), "--prompt-len", "8", "--gen-len", "4", "--batch", "2");
        Assert.True(code == 0, stderr);
        Assert.Matches(@"prefill\s+[\d.]+ tokens/s", stdout);
        Assert.Matches(@"decode\s+[\d.]+ tokens/s total", stdout);
        Assert.Matches(@"efficiency\s+[\d.]+% of the roofline", stdout);
        Assert.Contains("kv cache     512 bytes per token", stdout); // 2 layers × (k, v) × 2 kv heads × head dim 16 × 4 bytes
    }

    [Fact]
    public void EnforceEagerIsAcceptedAndChangesNothingOnTheCpu()
    {
        string[] run = ["run", "--model", Fixtures.Model("tiny-qwen2-r1"), "--prompt", "Hello", "--max-tokens", "6", "--temperature", "0", "--json", "--device", "cpu"];
        var (code, stdout, stderr) = Enclave(null, run);
        var (eagerCode, eagerStdout, eagerStderr) = Enclave(null, [.. run, "--enforce-eager"]);
        Assert.True(code == 0, stderr);
        Assert.True(eagerCode == 0, eagerStderr);
        Assert.Contains("completion_ids", stdout);
        Assert.Equal(stdout, eagerStdout);

        var (benchCode, benchStdout, benchStderr) = Enclave(null, "bench", "--dummy", Path.Combine(Fixtures.Model("tiny-llama3"), "config.json"), "--prompt-len", "8", "--gen-len", "4", "--device", "cpu", "--enforce-eager");
        Assert.True(benchCode == 0, benchStderr);
        Assert.Matches(@"decode\s+[\d.]+ tokens/s total", benchStdout);
    }
}
