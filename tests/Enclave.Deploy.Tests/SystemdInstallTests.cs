using System.Diagnostics;
using System.Text;
using Enclave.Deploy.Tests.Support;

namespace Enclave.Deploy.Tests;

/// <summary>
/// `enclave install` run as the real command, writing into temporary directories: the unit from deploy/systemd
/// with the chosen paths and user, the configuration and data directories, what it keeps on a second run, and
/// systemd's own verdict on the unit it wrote.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SystemdInstallTests : IDisposable
{
    private readonly DirectoryInfo scratch = Directory.CreateTempSubdirectory("enclave-install-");

    public void Dispose() => scratch.Delete(recursive: true);

    private static (int ExitCode, string Stdout, string Stderr) Enclave(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = new UTF8Encoding(false),
            StandardErrorEncoding = new UTF8Encoding(false),
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "enclave.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("enclave install did not finish in 120 s");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    private static Dictionary<string, List<string>> ServiceSection(string unit)
    {
        var keys = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        var section = string.Empty;
        foreach (var raw in unit.Split('\n'))
        {
            var line = raw.Trim();
            if (line.StartsWith('[') && line.EndsWith(']'))
            {
                section = line;
            }
            else if (section == "[Service]" && line.Length > 0 && !line.StartsWith('#') && line.IndexOf('=', StringComparison.Ordinal) is var eq and > 0)
            {
                var key = line[..eq];
                if (!keys.TryGetValue(key, out var values))
                {
                    keys[key] = values = [];
                }

                values.Add(line[(eq + 1)..]);
            }
        }

        return keys;
    }

    [Fact]
    public void InstallStagesProgramUnitConfigAndDataUnderRootNamingTheFinalPaths()
    {
        var root = scratch.FullName;
        var (code, stdout, stderr) = Enclave("install", "--root", root, "--prefix", "/opt/llm/enclave", "--home", "/srv/enclave-data", "--user", "llm",
            "--model", "r1=/srv/enclave-data/models/r1", "--host", "0.0.0.0", "--port", "8080");
        Assert.True(code == 0, stdout + stderr);

        var executable = Path.Combine(root, "opt/llm/enclave/enclave");
        Assert.True(File.Exists(executable));
        Assert.True(File.GetUnixFileMode(executable).HasFlag(UnixFileMode.UserExecute));
        Assert.True(File.Exists(Path.Combine(root, "opt/llm/enclave/enclave.dll")));

        var unitPath = Path.Combine(root, "etc/systemd/system/enclave.service");
        var unit = File.ReadAllText(unitPath);
        Assert.DoesNotContain(root, unit, StringComparison.Ordinal);
        var service = ServiceSection(unit);
        Assert.Equal(["/opt/llm/enclave/enclave serve $ENCLAVE_SERVE_ARGS"], service["ExecStart"]);
        Assert.Equal(["llm"], service["User"]);
        Assert.Equal(["llm"], service["Group"]);
        Assert.Equal(["/srv/enclave-data"], service["ReadWritePaths"]);
        Assert.Equal(["/srv/enclave-data"], service["WorkingDirectory"]);
        Assert.Contains("ENCLAVE_HOME=/srv/enclave-data", service["Environment"]);
        Assert.Equal(["-/etc/enclave/enclave.env"], service["EnvironmentFile"]);

        var env = Path.Combine(root, "etc/enclave/enclave.env");
        Assert.Contains("ENCLAVE_SERVE_ARGS=--host 0.0.0.0 --port 8080 --model r1=/srv/enclave-data/models/r1\n", File.ReadAllText(env), StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, File.GetUnixFileMode(env));
        var home = Path.Combine(root, "srv/enclave-data");
        Assert.True(Directory.Exists(Path.Combine(home, "models")));
        Assert.False(File.GetUnixFileMode(home).HasFlag(UnixFileMode.OtherRead));
        Assert.Contains("useradd --system", stdout, StringComparison.Ordinal);

        // A second run keeps the operator's settings and keeps a unit that was edited as .bak.
        File.AppendAllText(env, "Enclave__Gateway__Database=Host=db\n");
        var edited = File.ReadAllText(env);
        File.AppendAllText(unitPath, "# local edit\n");
        var editedUnit = File.ReadAllText(unitPath);
        (code, stdout, stderr) = Enclave("install", "--root", root, "--prefix", "/opt/llm/enclave", "--home", "/srv/enclave-data", "--user", "llm");
        Assert.True(code == 0, stdout + stderr);
        Assert.Equal(edited, File.ReadAllText(env));
        Assert.Equal(editedUnit, File.ReadAllText(unitPath + ".bak"));
        Assert.Equal(unit, File.ReadAllText(unitPath));
        Assert.Contains("exists and is kept", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void TheUnitCarriesTheHardeningOptions()
    {
        var service = ServiceSection(File.ReadAllText(ExternalTool.Repo("deploy", "systemd", "enclave.service")));
        Assert.Equal(["yes"], service["NoNewPrivileges"]);
        Assert.Equal(["strict"], service["ProtectSystem"]);
        Assert.Equal(["yes"], service["PrivateTmp"]);
        Assert.Equal(["yes"], service["ProtectHome"]);
        Assert.Equal([string.Empty], service["CapabilityBoundingSet"]);
        Assert.Equal([string.Empty], service["AmbientCapabilities"]);
        Assert.Equal(["/var/lib/enclave"], service["ReadWritePaths"]);
        Assert.Equal(["closed"], service["DevicePolicy"]);
        Assert.Contains("char-nvidiactl rw", service["DeviceAllow"]);
        Assert.Equal(["@system-service"], service["SystemCallFilter"]);
        Assert.Equal(["yes"], service["RestrictSUIDSGID"]);
        Assert.Equal(["native"], service["SystemCallArchitectures"]);
        Assert.DoesNotContain("root", service["User"]);
    }

    [SystemdAnalyzeFact]
    public void SystemdAnalyzeVerifiesTheWrittenUnit()
    {
        // Real absolute paths, so systemd finds the program the unit starts. The current user exists, so the
        // install neither creates one nor fails on chown.
        string Dir(string name) => Path.Combine(scratch.FullName, name);
        var user = Environment.UserName;
        var (code, stdout, stderr) = Enclave("install", "--prefix", Dir("opt"), "--home", Dir("data"), "--config-dir", Dir("etc"), "--unit-dir", Dir("units"), "--user", user);
        Assert.True(code == 0, stdout + stderr);
        var unit = Path.Combine(Dir("units"), "enclave.service");
        Assert.Contains($"ExecStart={Dir("opt")}/enclave serve", File.ReadAllText(unit), StringComparison.Ordinal);

        var (verify, verifyOut, verifyErr) = ExternalTool.Run(ExternalTool.SystemdAnalyze!, null, "verify", "--man=no", unit);
        Assert.True(verify == 0, verifyOut + verifyErr);
        // systemd only warns on unknown keys or bad values; any line about the unit is a defect.
        Assert.DoesNotContain("enclave.service", verifyOut + verifyErr, StringComparison.Ordinal);
    }

    [SystemdAnalyzeFact]
    public void SystemdAnalyzeWouldReportAMisspeltOption()
    {
        // The check above can fail: a misspelt hardening key is reported.
        var program = Path.Combine(scratch.FullName, "enclave");
        File.WriteAllText(program, "#!/bin/sh\n");
        File.SetUnixFileMode(program, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var unit = Path.Combine(scratch.FullName, "enclave.service");
        File.WriteAllText(unit, File.ReadAllText(ExternalTool.Repo("deploy", "systemd", "enclave.service"))
            .Replace("/opt/enclave/enclave", program, StringComparison.Ordinal)
            .Replace("ProtectSystem=strict", "ProtectSystm=strict", StringComparison.Ordinal));
        var (_, stdout, stderr) = ExternalTool.Run(ExternalTool.SystemdAnalyze!, null, "verify", "--man=no", unit);
        Assert.Contains("Unknown key 'ProtectSystm'", stdout + stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--prefix", "opt/enclave", "give an absolute path")]
    [InlineData("--home", "/srv/my data", "spaces, '%' and '$' are not allowed")]
    [InlineData("--user", "Bad User", "not a valid system user name")]
    [InlineData("--port", "70000", "expected 1-65535")]
    public void BadInputIsRefusedWithAReasonAndWritesNothing(string option, string value, string message)
    {
        var (code, stdout, stderr) = Enclave("install", "--root", scratch.FullName, option, value);
        Assert.Equal(2, code);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.Empty(scratch.EnumerateFileSystemInfos());
        Assert.Empty(stdout);
    }
}
