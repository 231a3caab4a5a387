using System.Diagnostics;
using Enclave.Gateway.Audit;

namespace Enclave.Gateway.Tests;

public sealed class CrashTests
{
    /// <summary>Kills a process in the middle of a concurrent write burst; the chain it leaves must verify and keep growing.</summary>
    [Theory, SqliteCase, PostgresCase]
    public async Task Killing_the_writer_mid_burst_leaves_no_gap(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keyFile = Path.Combine(t.Home.Path, "keys", "audit.key");
        var helper = Path.Combine(AppContext.BaseDirectory, "Enclave.Gateway.CrashHelper.dll");
        Assert.True(File.Exists(helper), helper);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { helper, t.Database, t.Home.Path, keyFile })
        {
            psi.ArgumentList.Add(a);
        }

        using var proc = Process.Start(psi)!;
        long seen = 0;
        while (seen < 60)
        {
            var line = await proc.StandardOutput.ReadLineAsync();
            Assert.NotNull(line);
            seen = long.Parse(line!, System.Globalization.CultureInfo.InvariantCulture);
        }

        proc.Kill(entireProcessTree: true);
        await proc.WaitForExitAsync();

        var log = new AuditLog(t.Store, AuditSigner.LoadOrCreate(keyFile)) { CheckpointEvery = 10 };
        var after = await log.VerifyAsync();
        Assert.True(after.Intact, after.Message);
        Assert.True(after.RecordCount >= seen, $"{after.RecordCount} records, {seen} acknowledged");

        await log.AppendAsync(new AuditEntry { Method = "GET", Endpoint = "/v1/models", Status = 200 });
        var resumed = await log.VerifyAsync();
        Assert.True(resumed.Intact, resumed.Message);
        Assert.Equal(after.RecordCount + 1, resumed.RecordCount);
    }
}
