using System.Diagnostics;
using System.Text;
using Enclave.Engine.Tests.Support;

namespace Enclave.Deploy.Tests.Support;

/// <summary>
/// The command-line tools the deployment files are checked with (promtool, helm, systemd-analyze), found on PATH or
/// where the .ci/install-*.sh scripts put them. Tests that need one are skipped, with the install command in the
/// reason, where it is missing; CI installs them all.
/// </summary>
public static class ExternalTool
{
    public static string RepositoryRoot => Fixtures.RepositoryRoot;

    public static string Repo(params string[] parts) => Path.Combine([RepositoryRoot, .. parts]);

    /// <summary>The tool's path: <paramref name="envVar"/>, then the repository's .cache/tools, then PATH; null when absent.</summary>
    public static string? Find(string name, string? envVar = null)
    {
        if (envVar is not null && Environment.GetEnvironmentVariable(envVar) is { Length: > 0 } configured && File.Exists(configured))
        {
            return configured;
        }

        var cached = Repo(".cache", "tools", name);
        if (File.Exists(cached))
        {
            return cached;
        }

        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    public static string? Promtool => Find("promtool", "ENCLAVE_PROMTOOL");

    public static string? Helm => Find("helm", "ENCLAVE_HELM");

    public static string? SystemdAnalyze => Find("systemd-analyze");

    public static (int ExitCode, string Stdout, string Stderr) Run(string tool, string? workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = new UTF8Encoding(false),
            StandardErrorEncoding = new UTF8Encoding(false),
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? RepositoryRoot,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        // helm keeps caches and config under HOME; keep them out of the developer's own.
        psi.Environment["HELM_CACHE_HOME"] = Path.Combine(Path.GetTempPath(), "enclave-helm-cache");
        psi.Environment["HELM_CONFIG_HOME"] = Path.Combine(Path.GetTempPath(), "enclave-helm-config");
        psi.Environment["HELM_DATA_HOME"] = Path.Combine(Path.GetTempPath(), "enclave-helm-data");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish in 120 s");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A fact skipped, saying how to install it, where promtool is missing.</summary>
public sealed class PromtoolFactAttribute : FactAttribute
{
    public PromtoolFactAttribute()
    {
        if (ExternalTool.Promtool is null)
        {
            Skip = "promtool not found: run `bash .ci/install-prometheus.sh` (Debian package prometheus) or set ENCLAVE_PROMTOOL";
        }
    }
}

/// <summary>A theory skipped, saying how to install it, where helm is missing.</summary>
public sealed class HelmTheoryAttribute : TheoryAttribute
{
    public HelmTheoryAttribute()
    {
        if (ExternalTool.Helm is null)
        {
            Skip = "helm not found: run `bash .ci/install-helm.sh` (puts it in .cache/tools) or set ENCLAVE_HELM";
        }
    }
}

/// <summary>A fact skipped, saying how to install it, where helm is missing.</summary>
public sealed class HelmFactAttribute : FactAttribute
{
    public HelmFactAttribute()
    {
        if (ExternalTool.Helm is null)
        {
            Skip = "helm not found: run `bash .ci/install-helm.sh` (puts it in .cache/tools) or set ENCLAVE_HELM";
        }
    }
}

/// <summary>A fact skipped where systemd-analyze is missing (it is part of Debian's systemd package).</summary>
public sealed class SystemdAnalyzeFactAttribute : FactAttribute
{
    public SystemdAnalyzeFactAttribute()
    {
        if (ExternalTool.SystemdAnalyze is null)
        {
            Skip = "systemd-analyze not found: install the Debian package systemd";
        }
    }
}
