using System.Diagnostics;

namespace Enclave.Engine.Tests.Support;

/// <summary>Runs a program the tests need (gcc, g++, bash, a compiled helper) and returns its exit code and output.</summary>
internal static class ExternalProcess
{
    /// <returns>The exit code, and standard output followed by standard error.</returns>
    public static (int ExitCode, string Output) Run(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var errors = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + errors.Result);
    }
}
