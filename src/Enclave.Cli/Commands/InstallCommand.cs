using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Enclave.Cli.Commands;

/// <summary>
/// <c>enclave install</c>: sets up a bare-metal appliance. Copies the running build to <c>--prefix</c>, writes the
/// hardened systemd unit (deploy/systemd/enclave.service, embedded) with the chosen paths and user, creates the
/// configuration directory with an environment file of <c>enclave serve</c> arguments, and the data directory.
/// <c>--root</c> stages everything under another directory (packaging, tests) while the unit names the final paths.
/// An existing environment file is kept (it holds the operator's settings); a different existing unit is kept as
/// <c>enclave.service.bak</c>.
/// </summary>
internal static partial class InstallCommand
{
    private const string DefaultPrefix = "/opt/enclave";
    private const string DefaultHome = "/var/lib/enclave";
    private const string DefaultConfig = "/etc/enclave";

    [GeneratedRegex("^[a-z_][a-z0-9_-]{0,31}$")]
    private static partial Regex UserName();

    public static Command Create()
    {
        var prefix = new Option<string>("--prefix") { Description = "Where the program goes", DefaultValueFactory = _ => DefaultPrefix };
        var home = new Option<string>("--home") { Description = "The data directory (ENCLAVE_HOME): gateway store, audit keys, models", DefaultValueFactory = _ => DefaultHome };
        var user = new Option<string>("--user") { Description = "The system user the service runs as (created when installing to / as root)", DefaultValueFactory = _ => "enclave" };
        var configDir = new Option<string>("--config-dir") { Description = "Configuration directory (enclave.env)", DefaultValueFactory = _ => DefaultConfig };
        var unitDir = new Option<string>("--unit-dir") { Description = "Where the systemd unit is written", DefaultValueFactory = _ => "/etc/systemd/system" };
        var root = new Option<string?>("--root") { Description = "Stage every file under this directory instead of / (the unit still names the final paths)" };
        var model = new Option<string[]>("--model") { Description = "Model to serve as [NAME=]DIR (repeatable), written to enclave.env", AllowMultipleArgumentsPerToken = false };
        var host = new Option<string>("--host") { Description = "Address the service listens on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port the service listens on", DefaultValueFactory = _ => 8000 };
        var command = new Command("install", "Install Enclave as a hardened systemd service: program, unit, configuration and data directories")
        {
            prefix, home, user, configDir, unitDir, root, model, host, port,
        };
        command.SetAction(result =>
        {
            var plan = new InstallPlan(
                Absolute(result.GetValue(prefix)!, "--prefix"),
                Absolute(result.GetValue(home)!, "--home"),
                Absolute(result.GetValue(configDir)!, "--config-dir"),
                Absolute(result.GetValue(unitDir)!, "--unit-dir"),
                result.GetValue(user)!,
                result.GetValue(root) is { } r ? Path.GetFullPath(r) : null,
                result.GetValue(model) ?? [],
                result.GetValue(host)!,
                result.GetValue(port));
            if (!UserName().IsMatch(plan.User))
            {
                throw new CliException($"--user {plan.User}: not a valid system user name (lower-case letters, digits, '_' and '-', at most 32)");
            }

            if (plan.Port is < 1 or > 65535)
            {
                throw new CliException($"--port {plan.Port}: expected 1-65535");
            }

            Install(plan, Console.Out);
            return 0;
        });
        return command;
    }

    private static string Absolute(string path, string option)
    {
        if (!Path.IsPathRooted(path))
        {
            throw new CliException($"{option} {path}: give an absolute path");
        }

        if (path.Any(char.IsWhiteSpace) || path.Contains('%', StringComparison.Ordinal) || path.Contains('$', StringComparison.Ordinal))
        {
            throw new CliException($"{option} {path}: spaces, '%' and '$' are not allowed (the path goes into a systemd unit unquoted)");
        }

        return Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
    }

    private sealed record InstallPlan(string Prefix, string Home, string ConfigDir, string UnitDir, string User, string? Root, string[] Models, string Host, int Port)
    {
        /// <summary>Where a final path is written: under <see cref="Root"/> when staging.</summary>
        public string Staged(string path) => Root is null ? path : Path.Combine(Root, path.TrimStart('/'));
    }

    /// <summary>The unit shipped in deploy/systemd, with the default paths and user replaced.</summary>
    public static string RenderUnit(string prefix, string home, string configDir, string user)
    {
        using var stream = typeof(InstallCommand).Assembly.GetManifestResourceStream("enclave.service")
            ?? throw new InvalidOperationException("the systemd unit is not embedded in this build");
        using var reader = new StreamReader(stream);
        var unit = reader.ReadToEnd()
            .Replace(DefaultPrefix + "/", prefix + "/", StringComparison.Ordinal)
            .Replace(DefaultHome, home, StringComparison.Ordinal)
            .Replace(DefaultConfig + "/", configDir + "/", StringComparison.Ordinal);
        return unit.Replace("\nUser=enclave\n", $"\nUser={user}\n", StringComparison.Ordinal)
            .Replace("\nGroup=enclave\n", $"\nGroup={user}\n", StringComparison.Ordinal);
    }

    private static void Install(InstallPlan plan, TextWriter output)
    {
        // 1. The program: the build this command runs from, unless it already is the prefix.
        var source = Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory);
        var target = plan.Staged(plan.Prefix);
        if (!string.Equals(Path.GetFullPath(source), Path.GetFullPath(target), StringComparison.Ordinal))
        {
            var files = CopyTree(source, target);
            output.WriteLine($"program: {files} files copied to {target}");
        }

        var executable = Path.Combine(target, "enclave");
        if (!File.Exists(executable))
        {
            throw new CliException($"{executable} is missing after the copy: run install from a published build (dotnet publish src/Enclave.Cli)");
        }

        // 2. Data directory, owner-only: it holds the gateway store and the audit signing key.
        var home = plan.Staged(plan.Home);
        Directory.CreateDirectory(Path.Combine(home, "models"));
        SetMode(home, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        output.WriteLine($"data: {home}");

        // 3. Configuration: created once, then the operator's.
        var configDir = plan.Staged(plan.ConfigDir);
        Directory.CreateDirectory(configDir);
        SetMode(configDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        var envFile = Path.Combine(configDir, "enclave.env");
        if (File.Exists(envFile))
        {
            output.WriteLine($"config: {envFile} exists and is kept");
        }
        else
        {
            File.WriteAllText(envFile, EnvironmentFile(plan));
            SetMode(envFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
            output.WriteLine($"config: {envFile}");
        }

        // 4. The unit.
        var unitDir = plan.Staged(plan.UnitDir);
        Directory.CreateDirectory(unitDir);
        var unitFile = Path.Combine(unitDir, "enclave.service");
        var unit = RenderUnit(plan.Prefix, plan.Home, plan.ConfigDir, plan.User);
        if (File.Exists(unitFile) && File.ReadAllText(unitFile) != unit)
        {
            File.Copy(unitFile, unitFile + ".bak", overwrite: true);
            output.WriteLine($"unit: the previous unit is kept as {unitFile}.bak");
        }

        File.WriteAllText(unitFile, unit);
        output.WriteLine($"unit: {unitFile}");

        // 5. The service user, only for a real install by root.
        if (plan.Root is null && Environment.IsPrivilegedProcess && OperatingSystem.IsLinux())
        {
            if (Run("id", "-u", plan.User) != 0)
            {
                if (Run("useradd", "--system", "--home-dir", plan.Home, "--shell", "/usr/sbin/nologin", "--user-group", plan.User) != 0)
                {
                    throw new CliException($"useradd {plan.User} failed: create the user yourself, then run install again");
                }

                output.WriteLine($"user: {plan.User} created");
            }

            if (Run("chown", "-R", $"{plan.User}:{plan.User}", plan.Home) != 0 || Run("chown", $"root:{plan.User}", plan.ConfigDir, Path.Combine(plan.ConfigDir, "enclave.env")) != 0)
            {
                throw new CliException($"chown to {plan.User} failed");
            }
        }
        else
        {
            output.WriteLine($"user: not created here; on the target run: useradd --system --home-dir {plan.Home} --shell /usr/sbin/nologin --user-group {plan.User} && chown -R {plan.User}: {plan.Home}");
        }

        output.WriteLine(plan.Models.Length == 0
            ? $"next: put models under {plan.Home}/models, add --model NAME=DIR to ENCLAVE_SERVE_ARGS in {plan.ConfigDir}/enclave.env, then: systemctl daemon-reload && systemctl enable --now enclave"
            : "next: systemctl daemon-reload && systemctl enable --now enclave; journalctl -u enclave prints the first admin key once");
    }

    private static string EnvironmentFile(InstallPlan plan)
    {
        var args = new StringBuilder($"--host {plan.Host} --port {plan.Port}");
        foreach (var m in plan.Models)
        {
            if (m.Any(char.IsWhiteSpace))
            {
                throw new CliException($"--model {m}: spaces are not allowed (the value is split on whitespace by systemd)");
            }

            args.Append(" --model ").Append(m);
        }

        return $"""
            # Settings of the enclave systemd service. After editing: systemctl restart enclave
            # Arguments of `enclave serve` (see `enclave serve --help`), split on spaces.
            ENCLAVE_SERVE_ARGS={args}
            # Gateway store in PostgreSQL instead of SQLite under {plan.Home}:
            #Enclave__Gateway__Database=Host=db.internal;Database=enclave;Username=enclave;Password=change-me
            # Request traces to an OpenTelemetry collector:
            #Enclave__Telemetry__OtlpEndpoint=http://otel-collector.internal:4317

            """;
    }

    private static int CopyTree(string source, string target)
    {
        var count = 0;
        Directory.CreateDirectory(target);
        foreach (var dir in Directory.EnumerateDirectories(source, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(target, Path.GetRelativePath(source, dir)));
        }

        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(target, Path.GetRelativePath(source, file));
            File.Copy(file, to, overwrite: true);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(to, File.GetUnixFileMode(file));
            }

            count++;
        }

        return count;
    }

    private static void SetMode(string path, UnixFileMode mode)
    {
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, mode);
        }
    }

    private static int Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        process.StandardOutput.ReadToEnd();
        process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode;
    }
}
