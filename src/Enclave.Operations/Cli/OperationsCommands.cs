using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Store;
using Enclave.Operations.Backup;
using Enclave.Operations.Encryption;
using Enclave.Operations.Planning;
using Enclave.Operations.Registry;
using Enclave.Operations.Transfer;
using Spectre.Console;

namespace Enclave.Operations.Cli;

/// <summary>
/// <c>enclave pull</c>, <c>models</c>, <c>backup</c>, <c>doctor</c> and <c>plan</c>. Each is a thin shell over the
/// library; user errors surface as <see cref="ArgumentException"/>/<see cref="IOException"/>/<see cref="InvalidDataException"/>
/// so the root command prints them as one line and exits 2.
/// </summary>
public static class OperationsCommands
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static IEnumerable<Command> Create() => [Pull(), Models(), BackupCommand(), DoctorCommand(), Plan()];

    private static string Home()
    {
        var home = EnclaveHome.Resolve();
        Directory.CreateDirectory(home);
        return home;
    }

    private static TextWriter Out(ParseResult pr) => pr.InvocationConfiguration.Output;

    private static Option<bool> JsonOption() => new("--json") { Description = "Print JSON" };

    private static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KiB"),
    };

    private static Command Pull()
    {
        var reference = new Argument<string>("repo") { Description = "OWNER/NAME[@REVISION] on the hub (revision: branch, tag or commit; default main)" };
        var name = new Option<string?>("--name") { Description = "Local model name (default: NAME)" };
        var endpoint = new Option<string?>("--endpoint") { Description = "Hub URL (default: HF_ENDPOINT, else https://huggingface.co); a local mirror on an isolated network" };
        var layout = new Option<string>("--layout") { Description = "API layout of the endpoint: huggingface or modelscope", DefaultValueFactory = _ => "huggingface" };
        var include = new Option<string[]>("--include") { Description = "Only files matching these glob patterns (repeatable), e.g. --include '*.safetensors' --include '*.json'", AllowMultipleArgumentsPerToken = true };
        var parallel = new Option<int>("--parallel") { Description = "Files downloaded at once", DefaultValueFactory = _ => 4 };
        var command = new Command("pull", "Download a model from a Hugging Face-compatible hub into the local store, resumable and verified") { reference, name, endpoint, layout, include, parallel };
        command.SetAction(async (pr, ct) =>
        {
            var hubLayout = HubClient.ParseLayout(pr.GetValue(layout)!);
            var url = HubClient.ResolveEndpoint(pr.GetValue(endpoint) ?? (hubLayout == HubLayout.ModelScope && Environment.GetEnvironmentVariable("HF_ENDPOINT") is null ? "https://modelscope.cn" : null));
            using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
            http.DefaultRequestHeaders.UserAgent.ParseAdd("enclave-pull/1");
            var hub = new HubClient(http, url, hubLayout, Environment.GetEnvironmentVariable("HF_TOKEN"));
            var puller = new ModelPuller(new ModelStore(Home()), hub);
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            ModelRecord? record = null;
            await console.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var tasks = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                    var progress = new InlineProgress<PullProgress>(p =>
                    {
                        lock (tasks)
                        {
                            if (!tasks.TryGetValue(p.Path, out var task))
                            {
                                task = tasks[p.Path] = ctx.AddTask(Markup.Escape(p.Path), maxValue: Math.Max(1, p.Total));
                            }

                            task.Value = p.Done;
                        }
                    });
                    record = await puller.PullAsync(pr.GetValue(reference)!, pr.GetValue(name),
                        new PullOptions { Parallelism = pr.GetValue(parallel), Include = pr.GetValue(include) ?? [], Progress = progress }, ct);
                });
            await Out(pr).WriteLineAsync($"Installed {record!.Name} ({record.Files.Count} files, {Size(record.TotalBytes)}) from {record.Repo}@{record.Commit}, every file verified");
            return 0;
        });
        return command;
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool and reorder updates).</summary>
    private sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    private static Command Models()
    {
        var models = new Command("models", "The local model store under ENCLAVE_HOME/models: list, inspect, verify, transfer, encrypt");

        var listJson = JsonOption();
        var list = new Command("list", "List installed models") { listJson };
        list.SetAction(async (pr, ct) =>
        {
            var records = new ModelStore(Home()).List();
            if (pr.GetValue(listJson))
            {
                await Out(pr).WriteLineAsync(JsonSerializer.Serialize(records.Select(r => new { name = r.Name, repo = r.Repo, commit = r.Commit, bytes = r.TotalBytes, files = r.Files.Count, encryption = r.Encryption, installed_at = r.InstalledAt }), Json));
                return 0;
            }

            foreach (var r in records)
            {
                await Out(pr).WriteLineAsync($"{r.Name,-36} {Size(r.TotalBytes),12} {r.Files.Count,5} files  {(r.Encryption ?? "plain"),-11} {r.Repo ?? r.Source ?? "-"}");
            }

            return 0;
        });

        var showName = new Argument<string>("name");
        var showJson = JsonOption();
        var show = new Command("show", "Show a model's provenance, files and hashes") { showName, showJson };
        show.SetAction(async (pr, ct) =>
        {
            var store = new ModelStore(Home());
            var r = store.Get(pr.GetValue(showName)!);
            if (pr.GetValue(showJson))
            {
                await Out(pr).WriteLineAsync(JsonSerializer.Serialize(r, Json));
                return 0;
            }

            var o = Out(pr);
            await o.WriteLineAsync($"name:       {r.Name}\npath:       {store.PathOf(r.Name)}\nsource:     {r.Source ?? "-"}\nrepo:       {r.Repo ?? "-"}\nrevision:   {r.Revision ?? "-"}\ncommit:     {r.Commit ?? "-"}\ninstalled:  {r.InstalledAt:u}\nencryption: {r.Encryption ?? "none"}\nsize:       {Size(r.TotalBytes)}");
            foreach (var f in r.Files)
            {
                await o.WriteLineAsync($"  {f.Sha256}  {f.Size,14}  {f.Path}");
            }

            return 0;
        });

        var addDir = new Argument<string>("directory") { Description = "A Hugging Face model directory downloaded by other means" };
        var addName = new Option<string?>("--name") { Description = "Local model name (default: the directory's name)" };
        var add = new Command("add", "Copy a local model directory into the store, recording every file's SHA-256") { addDir, addName };
        add.SetAction(async (pr, ct) =>
        {
            var r = new ModelStore(Home()).Add(pr.GetValue(addDir)!, pr.GetValue(addName));
            await Out(pr).WriteLineAsync($"Installed {r.Name} ({r.Files.Count} files, {Size(r.TotalBytes)})");
            return 0;
        });

        var rmName = new Argument<string>("name");
        var rm = new Command("rm", "Remove an installed model") { rmName };
        rm.SetAction(async (pr, ct) =>
        {
            new ModelStore(Home()).Remove(pr.GetValue(rmName)!);
            await Out(pr).WriteLineAsync($"Removed {pr.GetValue(rmName)}");
            return 0;
        });

        var verifyName = new Argument<string>("name");
        var verify = new Command("verify", "Re-hash every file against the recorded SHA-256; exit 1 on any difference") { verifyName };
        verify.SetAction(async (pr, ct) =>
        {
            var store = new ModelStore(Home());
            var name = pr.GetValue(verifyName)!;
            var problems = store.Verify(name);
            if (problems.Count == 0)
            {
                await Out(pr).WriteLineAsync($"OK {name}: {store.Get(name).Files.Count} files match their SHA-256");
                return 0;
            }

            foreach (var p in problems)
            {
                await pr.InvocationConfiguration.Error.WriteLineAsync($"FAILED {p.Path}: {p.Message}");
            }

            await pr.InvocationConfiguration.Error.WriteLineAsync($"{name}: {problems.Count} file(s) do not verify; remove the model and pull or import it again");
            return 1;
        });

        var exportName = new Argument<string>("name");
        var exportOut = new Option<string>("--output", "-o") { Description = "Bundle file to write (tar)", Required = true };
        var export = new Command("export", "Write a model as a signed bundle for an isolated site") { exportName, exportOut };
        export.SetAction(async (pr, ct) =>
        {
            var home = Home();
            var manifest = ModelBundle.Export(new ModelStore(home), pr.GetValue(exportName)!, pr.GetValue(exportOut)!);
            await Out(pr).WriteLineAsync($"Wrote {pr.GetValue(exportOut)}: {manifest.Files.Count} files, signed by {manifest.PublicKey}");
            await Out(pr).WriteLineAsync("Give the importing site this public key (enclave models key -o FILE) and import with --trusted-key FILE.");
            return 0;
        });

        var importFile = new Argument<string>("bundle");
        var trusted = new Option<string?>("--trusted-key") { Description = "File with the exporting site's public key; the manifest must be signed by it" };
        var importName = new Option<string?>("--name") { Description = "Install under this name instead of the bundle's" };
        var import = new Command("import", "Install a model from a bundle, verifying its signature and every file's SHA-256") { importFile, trusted, importName };
        import.SetAction(async (pr, ct) =>
        {
            var key = pr.GetValue(trusted) is { } k ? ModelBundle.ReadPublicKey(k) : null;
            var result = ModelBundle.Import(new ModelStore(Home()), pr.GetValue(importFile)!, key, pr.GetValue(importName));
            if (!result.KeyPinned)
            {
                await pr.InvocationConfiguration.Error.WriteLineAsync($"warning: signature checked against the key inside the bundle ({result.SignerPublicKey}); pass --trusted-key to pin the exporting site");
            }

            await Out(pr).WriteLineAsync($"Imported {result.Record.Name}: {result.Record.Files.Count} files verified");
            return 0;
        });

        var keyOut = new Option<string?>("--output", "-o") { Description = "Also write the public key to this file" };
        var key = new Command("key", "Print this site's bundle-signing public key (created on first use)") { keyOut };
        key.SetAction(async (pr, ct) =>
        {
            var signer = ModelBundle.SigningKey(Home());
            if (pr.GetValue(keyOut) is { } file)
            {
                await File.WriteAllTextAsync(file, $"# enclave model bundle signing key (Ed25519)\n{signer.PublicKey}\n", ct);
            }

            await Out(pr).WriteLineAsync(signer.PublicKey);
            return 0;
        });

        var encName = new Argument<string>("name");
        var algorithm = new Option<string>("--algorithm") { Description = "aes-256-gcm or sm4-gcm", DefaultValueFactory = _ => Aead.Aes256Gcm };
        var keyFile = new Option<string?>("--key-file") { Description = "Key file (id:base64key lines, the gateway's format); default ENCLAVE_HOME/keys/models.key, created if absent" };
        var encrypt = new Command("encrypt", "Encrypt a model's safetensors at rest, in authenticated chunks; run and serve decrypt into memory") { encName, algorithm, keyFile };
        encrypt.SetAction(async (pr, ct) =>
        {
            var home = Home();
            var store = new ModelStore(home);
            var name = pr.GetValue(encName)!;
            var record = store.Get(name);
            var alg = pr.GetValue(algorithm)!;
            if (alg is not (Aead.Aes256Gcm or Aead.Sm4Gcm))
            {
                throw new ArgumentException($"--algorithm {alg}: use {Aead.Aes256Gcm} or {Aead.Sm4Gcm}");
            }

            var problems = store.Verify(name);
            if (problems.Count > 0)
            {
                throw new ModelIntegrityException($"model '{name}' does not verify ({problems[0].Path}: {problems[0].Message}); not encrypting it");
            }

            var keys = EncryptedCheckpoint.KeyProvider(pr.GetValue(keyFile), home, create: true);
            var header = EncryptedCheckpoint.Encrypt(store.PathOf(name), keys, alg);
            ModelStore.WriteRecord(store.PathOf(name), record with { Encryption = alg, Files = [] });
            await Out(pr).WriteLineAsync($"Encrypted {header.Files.Count} file(s) of {name} with {alg} under key {header.KeyId}; the plaintext safetensors were deleted");
            return 0;
        });

        foreach (var c in new[] { list, show, add, rm, verify, export, import, key, encrypt })
        {
            models.Add(c);
        }

        return models;
    }

    private static BackupSecret Secret(ParseResult pr, Option<string?> passphraseFile, Option<string?> keyFile)
    {
        var passphrase = pr.GetValue(passphraseFile) is { } f
            ? (File.Exists(f) ? File.ReadAllText(f).TrimEnd('\r', '\n') : throw new FileNotFoundException($"--passphrase-file {f}: no such file"))
            : Environment.GetEnvironmentVariable("ENCLAVE_BACKUP_PASSPHRASE");
        var key = pr.GetValue(keyFile);
        if (key is not null && !File.Exists(key))
        {
            throw new FileNotFoundException($"--key-file {key}: no such file");
        }

        // An explicit key file wins over a passphrase inherited from the environment.
        return new BackupSecret(key is not null && pr.GetValue(passphraseFile) is null ? null : passphrase, key);
    }

    private static Command BackupCommand()
    {
        var backup = new Command("backup", "Back up and restore the gateway store, audit archives, configuration and keys");

        Option<string?> Db() => new("--database") { Description = "Store connection string (default: ENCLAVE_HOME/gateway.db)" };
        Option<string?> Pass() => new("--passphrase-file") { Description = "File holding the passphrase that seals the key material (or set ENCLAVE_BACKUP_PASSPHRASE)" };
        Option<string?> KeyFile() => new("--key-file") { Description = "Key file (id:base64key lines) that seals the key material instead of a passphrase" };

        var output = new Option<string>("--output", "-o") { Description = "Archive to write (tar)", Required = true };
        var cdb = Db();
        var cpass = Pass();
        var ckey = KeyFile();
        var create = new Command("create", "Write one archive: database, audit archives, configuration, data directories, sealed keys") { output, cdb, cpass, ckey };
        create.SetAction(async (pr, ct) =>
        {
            var summary = await BackupService.CreateAsync(Home(), pr.GetValue(cdb), pr.GetValue(output)!, Secret(pr, cpass, ckey), ct);
            await Out(pr).WriteLineAsync($"Wrote {pr.GetValue(output)}: {summary.Manifest.Files.Count} entries, {Size(summary.Bytes)}, {summary.Manifest.Store} store; key material sealed");
            return 0;
        });

        var archive = new Argument<string>("archive");
        var home = new Option<string?>("--home") { Description = "Data directory to restore into (default: ENCLAVE_HOME); should be empty" };
        var rdb = Db();
        var rpass = Pass();
        var rkey = KeyFile();
        var force = new Option<bool>("--force") { Description = "Replace an existing store and keys" };
        var restore = new Command("restore", "Restore an archive onto a data directory after checking every entry's hash") { archive, home, rdb, rpass, rkey, force };
        restore.SetAction(async (pr, ct) =>
        {
            var target = EnclaveHome.Resolve(pr.GetValue(home));
            var manifest = await BackupService.RestoreAsync(pr.GetValue(archive)!, target, pr.GetValue(rdb), Secret(pr, rpass, rkey), pr.GetValue(force), ct);
            await Out(pr).WriteLineAsync($"Restored {manifest.Files.Count} entries from {manifest.CreatedAt:u} into {target}; run 'enclave audit verify' to check the chain");
            return 0;
        });

        backup.Add(create);
        backup.Add(restore);
        return backup;
    }

    private static Command DoctorCommand()
    {
        var json = JsonOption();
        var database = new Option<string?>("--database") { Description = "Store connection string to check (default: ENCLAVE_HOME/gateway.db when present)" };
        var redis = new Option<string?>("--redis") { Description = "Redis HOST:PORT to check" };
        var host = new Option<string>("--host") { Description = "Address the server will listen on", DefaultValueFactory = _ => "0.0.0.0" };
        var ports = new Option<int[]>("--port") { Description = "Ports that must be free (repeatable)", DefaultValueFactory = _ => [8000], AllowMultipleArgumentsPerToken = true };
        var cert = new Option<string?>("--tls-cert") { Description = "PEM certificate to check" };
        var key = new Option<string?>("--tls-key") { Description = "PEM private key that must match --tls-cert" };
        var models = new Option<string[]>("--model") { Description = "Installed models to size and verify (default: all)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("doctor", "Check this machine before install and when something fails: pass/warn/fail with a hint each; exit 1 on any failure") { json, database, redis, host, ports, cert, key, models };
        command.SetAction(async (pr, ct) =>
        {
            var results = await Doctor.Doctor.RunAsync(new Doctor.DoctorOptions
            {
                Home = EnclaveHome.Resolve(),
                Database = pr.GetValue(database),
                Redis = pr.GetValue(redis),
                Host = pr.GetValue(host)!,
                Ports = pr.GetValue(ports) ?? [8000],
                TlsCertificate = pr.GetValue(cert),
                TlsKey = pr.GetValue(key),
                Models = pr.GetValue(models) ?? [],
            }, ct);
            var failed = results.Count(r => r.Status == Doctor.CheckStatus.Fail);
            if (pr.GetValue(json))
            {
                await Out(pr).WriteLineAsync(JsonSerializer.Serialize(new { ok = failed == 0, checks = results }, Json));
            }
            else
            {
                foreach (var r in results)
                {
                    var tag = r.Status switch { Doctor.CheckStatus.Pass => "PASS", Doctor.CheckStatus.Warn => "WARN", _ => "FAIL" };
                    await Out(pr).WriteLineAsync($"{tag}  {r.Check,-16} {r.Detail}");
                    if (r.Hint is not null && r.Status != Doctor.CheckStatus.Pass)
                    {
                        await Out(pr).WriteLineAsync($"      {"",-16} fix: {r.Hint}");
                    }
                }

                await Out(pr).WriteLineAsync($"{results.Count(r => r.Status == Doctor.CheckStatus.Pass)} passed, {results.Count(r => r.Status == Doctor.CheckStatus.Warn)} warnings, {failed} failed");
            }

            return failed == 0 ? 0 : 1;
        });
        return command;
    }

    private static Command Plan()
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory or its config.json (Hugging Face format)", Required = true };
        var quant = new Option<string>("--quant") { Description = "bf16, fp8, int8 or int4", DefaultValueFactory = _ => "bf16" };
        var context = new Option<int>("--context") { Description = "Tokens per sequence (prompt + output)", DefaultValueFactory = _ => 8192 };
        var concurrency = new Option<int>("--concurrency") { Description = "Sequences in flight at once", DefaultValueFactory = _ => 64 };
        var gpu = new Option<string>("--gpu") { Description = "GPU: " + string.Join(", ", GpuSpec.Catalog.Select(g => g.Id)), DefaultValueFactory = _ => "h100-80g" };
        var kvDtype = new Option<string>("--kv-dtype") { Description = "KV cache element type: bf16 or fp8", DefaultValueFactory = _ => "bf16" };
        var json = JsonOption();
        var plan = new Command("plan", "Size a deployment: weight and KV-cache memory, GPUs and parallelism, decode throughput bounds, with formulas")
        {
            model, quant, context, concurrency, gpu, kvDtype, json,
        };
        plan.SetAction(async (pr, ct) =>
        {
            var kvBytes = pr.GetValue(kvDtype) switch
            {
                "bf16" or "fp16" => 2,
                "fp8" => 1,
                var other => throw new ArgumentException($"--kv-dtype {other}: use bf16 or fp8"),
            };
            var result = SizingPlan.Compute(new PlanRequest(ModelShape.Load(pr.GetValue(model)!), QuantScheme.Find(pr.GetValue(quant)!),
                pr.GetValue(context), pr.GetValue(concurrency), GpuSpec.Find(pr.GetValue(gpu)!), kvBytes));
            await Out(pr).WriteAsync(pr.GetValue(json) ? JsonSerializer.Serialize(result.ToJson(), Json) + "\n" : result.ToText());
            return 0;
        });
        plan.Add(Cost());
        return plan;
    }

    private static Command Cost()
    {
        var file = new Option<string?>("--config") { Description = "YAML file with the inputs (keys: " + string.Join(", ", CostInputs.Fields.Select(f => f.Key)) + ")" };
        var json = JsonOption();
        var command = new Command("cost", "On-premises total cost of ownership against a per-token cloud price; prints the break-even volume. Defaults are EXAMPLES, not prices") { file, json };
        var options = CostInputs.Fields.Select(f => (Field: f, Option: new Option<double?>("--" + f.Key.Replace('_', '-')) { Description = f.Help + " (example default)" })).ToList();
        foreach (var (_, option) in options)
        {
            command.Add(option);
        }

        command.SetAction(async (pr, ct) =>
        {
            var path = pr.GetValue(file);
            if (path is not null && !File.Exists(path))
            {
                throw new FileNotFoundException($"--config {path}: no such file");
            }

            var inputs = new CostInputs();
            var given = path is not null ? inputs.ApplyYaml(path) : 0;
            foreach (var (field, option) in options)
            {
                if (pr.GetValue(option) is { } v)
                {
                    field.Set(inputs, v);
                    given++;
                }
            }

            var result = CostResult.Compute(inputs);
            var defaultsUsed = given < CostInputs.Fields.Count;
            if (pr.GetValue(json))
            {
                await Out(pr).WriteLineAsync(JsonSerializer.Serialize(new
                {
                    example_defaults_used = defaultsUsed,
                    on_prem_per_day = Math.Round(result.OnPremPerDay, 2),
                    cloud_per_day = Math.Round(result.CloudPerDay, 2),
                    cloud_per_request = result.CloudPerRequest,
                    break_even_requests_per_day = result.BreakEvenRequestsPerDay is { } b ? Math.Round(b) : (double?)null,
                    formulas = result.Formulas,
                }, Json));
            }
            else
            {
                await Out(pr).WriteAsync(result.ToText(defaultsUsed));
            }

            return 0;
        });
        return command;
    }
}
