using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Gateway.Store;

namespace Enclave.Gateway.Cli;

/// <summary>
/// The gateway's command-line verbs (<c>keys</c>, <c>users</c>, <c>roles</c>, <c>audit</c>, <c>db</c>)
/// for the main <c>enclave</c> root command. Each acts on the store under <c>ENCLAVE_HOME</c>, or the
/// one named by <c>--database</c>, which is the store <c>enclave serve</c> uses.
/// </summary>
public static class GatewayCommands
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static IEnumerable<Command> Create() => [Keys(), Users(), Roles(), Policies(), AuditCommand(), Encryption(), Db()];

    private static Option<string?> DatabaseOption() => new("--database")
    {
        Description = "Store connection string (PostgreSQL 'Host=...' or a SQLite file); default: ENCLAVE_HOME/gateway.db",
    };

    private static Option<bool> JsonOption() => new("--json") { Description = "Print JSON lines" };

    private static async Task<GatewayStore> OpenAsync(ParseResult pr, Option<string?> db, CancellationToken ct, bool migrate = true)
    {
        var store = GatewayStore.Resolve(pr.GetValue(db), EnclaveHome.Resolve());
        if (migrate)
        {
            await store.MigrateAsync(ct);
        }

        return store;
    }

    private static TextWriter Out(ParseResult pr) => pr.InvocationConfiguration.Output;

    private static TextWriter Err(ParseResult pr) => pr.InvocationConfiguration.Error;

    /// <summary>Runs a command body, turning validation failures into a message and exit code 1.</summary>
    private static async Task<int> Guard(ParseResult pr, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (GatewayException e)
        {
            await Err(pr).WriteLineAsync("error: " + e.Message);
            return 1;
        }
        catch (FormatException e)
        {
            await Err(pr).WriteLineAsync("error: " + e.Message);
            return 1;
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            await Err(pr).WriteLineAsync("error: " + e.Message);
            return 1;
        }
    }

    internal static DateTimeOffset ParseDate(string text) =>
        DateTimeOffset.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);

    private static string Stamp(long? ms) => ms is { } v ? DateTimeOffset.FromUnixTimeMilliseconds(v).ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture) : "-";

    private static Command Keys()
    {
        var keys = new Command("keys", "Create, list and revoke API keys");

        var db = DatabaseOption();
        var role = new Option<string>("--role") { Description = "Role the key acts as", Required = true };
        var name = new Option<string?>("--name") { Description = "Label shown in listings and audit records" };
        var user = new Option<string?>("--user") { Description = "Owning user (name or id)" };
        var expires = new Option<string?>("--expires") { Description = "Expiry date/time (UTC unless an offset is given)" };
        var cidrs = new Option<string?>("--allowed-cidrs") { Description = "Comma-separated source networks allowed to use the key" };
        var models = new Option<string?>("--allowed-models") { Description = "Comma-separated model ids the key may use" };
        var rpm = new Option<int?>("--rpm") { Description = "Requests per minute" };
        var tpm = new Option<int?>("--tpm") { Description = "Tokens per minute" };
        var pii = new Option<string?>("--prompt-pii") { Description = "PII action for prompts: allow, mask, tag or block" };
        var create = new Command("create", "Create a key; the secret is printed once, as the last line") { db, role, name, user, expires, cidrs, models, rpm, tpm, pii };
        create.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, db, ct);
            var exp = pr.GetValue(expires) is { } e ? ParseDate(e) : (DateTimeOffset?)null;
            var created = await new KeyService(store).CreateAsync(new KeyCreateRequest(
                pr.GetValue(role)!, pr.GetValue(name), pr.GetValue(user), exp, pr.GetValue(cidrs), pr.GetValue(models), pr.GetValue(rpm), pr.GetValue(tpm), pr.GetValue(pii)), ct);
            var o = Out(pr);
            await o.WriteLineAsync($"Created key {ApiKeySecret.Scheme}{created.Key.Prefix}... id={created.Key.Id} role={created.Key.Role} expires={Stamp(created.Key.ExpiresAtMs)}");
            await o.WriteLineAsync("The secret is shown only now:");
            await o.WriteLineAsync(created.Secret);
            return 0;
        }));

        var listDb = DatabaseOption();
        var listJson = JsonOption();
        var list = new Command("list", "List keys (never their secrets)") { listDb, listJson };
        list.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, listDb, ct);
            var o = Out(pr);
            foreach (var k in await new KeyService(store).ListAsync(ct))
            {
                var status = k.RevokedAtMs is not null ? "revoked" : k.ExpiresAtMs is { } x && x <= DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() ? "expired" : "active";
                if (pr.GetValue(listJson))
                {
                    await o.WriteLineAsync(JsonSerializer.Serialize(AdminEndpoints.KeyView(k), Json));
                }
                else
                {
                    await o.WriteLineAsync($"{k.Id}  {ApiKeySecret.Scheme}{k.Prefix}  {k.Role,-10} {status,-8} name={k.Name ?? "-"} expires={Stamp(k.ExpiresAtMs)} last_used={Stamp(k.LastUsedAtMs)}");
                }
            }

            return 0;
        }));

        var revokeDb = DatabaseOption();
        var id = new Argument<string>("key") { Description = "Key id or prefix (as printed by 'keys list')" };
        var revoke = new Command("revoke", "Revoke a key; it stops working at once") { revokeDb, id };
        revoke.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, revokeDb, ct);
            var which = pr.GetValue(id)!.Trim();
            if (which.StartsWith(ApiKeySecret.Scheme, StringComparison.Ordinal))
            {
                which = which[ApiKeySecret.Scheme.Length..].TrimEnd('.');
                if (which.Length > ApiKeySecret.PrefixLength)
                {
                    which = which[..ApiKeySecret.PrefixLength];
                }
            }

            if (!await new KeyService(store).RevokeAsync(which, ct))
            {
                await Err(pr).WriteLineAsync($"error: no key '{pr.GetValue(id)}'");
                return 1;
            }

            await Out(pr).WriteLineAsync($"Revoked {pr.GetValue(id)}");
            return 0;
        }));

        keys.Add(create);
        keys.Add(list);
        keys.Add(revoke);
        return keys;
    }

    private static Command Users()
    {
        var users = new Command("users", "Manage users");

        var db = DatabaseOption();
        var name = new Argument<string>("name");
        var display = new Option<string?>("--display-name");
        var cidrs = new Option<string?>("--allowed-cidrs") { Description = "Comma-separated source networks for all of the user's keys" };
        var add = new Command("add", "Add a user") { db, name, display, cidrs };
        add.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, db, ct);
            var u = await new UserService(store, new KeyService(store)).AddAsync(pr.GetValue(name)!, pr.GetValue(display), pr.GetValue(cidrs), ct);
            await Out(pr).WriteLineAsync($"Added user {u.Name} id={u.Id}");
            return 0;
        }));

        var listDb = DatabaseOption();
        var listJson = JsonOption();
        var list = new Command("list", "List users") { listDb, listJson };
        list.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, listDb, ct);
            foreach (var u in await new UserService(store, new KeyService(store)).ListAsync(ct))
            {
                await Out(pr).WriteLineAsync(pr.GetValue(listJson)
                    ? JsonSerializer.Serialize(AdminEndpoints.UserView(u), Json)
                    : $"{u.Name,-20} {u.Status,-9} {u.DisplayName ?? "-"}");
            }

            return 0;
        }));

        users.Add(add);
        users.Add(list);
        users.Add(StatusCommand("disable", UserStatus.Disabled));
        users.Add(StatusCommand("enable", UserStatus.Active));
        return users;

        static Command StatusCommand(string verb, string status)
        {
            var sdb = DatabaseOption();
            var sname = new Argument<string>("name");
            var cmd = new Command(verb, $"{char.ToUpperInvariant(verb[0])}{verb[1..]} a user and all of the user's keys") { sdb, sname };
            cmd.SetAction((pr, ct) => Guard(pr, async () =>
            {
                var store = await OpenAsync(pr, sdb, ct);
                if (!await new UserService(store, new KeyService(store)).SetStatusAsync(pr.GetValue(sname)!, status, ct))
                {
                    await Err(pr).WriteLineAsync($"error: no user '{pr.GetValue(sname)}'");
                    return 1;
                }

                await Out(pr).WriteLineAsync($"User {pr.GetValue(sname)} is {status}");
                return 0;
            }));
            return cmd;
        }
    }

    private static Command Roles()
    {
        var roles = new Command("roles", "List and create roles");

        var listDb = DatabaseOption();
        var listJson = JsonOption();
        var list = new Command("list", "List roles and their permissions") { listDb, listJson };
        list.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, listDb, ct);
            foreach (var r in await RoleCatalog.ListAsync(store, ct))
            {
                await Out(pr).WriteLineAsync(pr.GetValue(listJson)
                    ? JsonSerializer.Serialize(AdminEndpoints.RoleView(r), Json)
                    : $"{r.Name,-16} {(r.BuiltIn ? "built-in" : "custom"),-9} {r.Permissions.Replace(' ', ',')}");
            }

            return 0;
        }));

        var db = DatabaseOption();
        var name = new Argument<string>("name");
        var perms = new Option<string>("--permissions") { Description = "Comma-separated permissions: " + string.Join(", ", Permissions.All), Required = true };
        var desc = new Option<string?>("--description");
        var cidrs = new Option<string?>("--allowed-cidrs");
        var create = new Command("create", "Create a custom role") { db, name, perms, desc, cidrs };
        create.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, db, ct);
            var r = await RoleCatalog.CreateAsync(store, pr.GetValue(name)!, [pr.GetValue(perms)!], pr.GetValue(desc), pr.GetValue(cidrs), ct);
            await Out(pr).WriteLineAsync($"Created role {r.Name}: {r.Permissions.Replace(' ', ',')}");
            return 0;
        }));

        roles.Add(list);
        roles.Add(create);
        return roles;
    }

    /// <summary>
    /// The audit log as the server has it: the signing key from <c>--signing-key</c> or the default
    /// file, and the master keys (for encrypted details) from the default key file or
    /// <c>ENCLAVE_MASTER_KEYS</c> when either exists.
    /// </summary>
    private static AuditLog OpenAudit(GatewayStore store, string? keyFile)
    {
        var home = EnclaveHome.Resolve();
        var log = new AuditLog(store, AuditSigner.LoadOrCreate(keyFile ?? GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)));
        if (File.Exists(MasterKeys.DefaultFile(home)))
        {
            log.Protector = new SecretProtector(new FileKeyProvider(MasterKeys.DefaultFile(home)));
        }
        else if (!string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable)))
        {
            log.Protector = new SecretProtector(new EnvironmentKeyProvider());
        }

        return log;
    }

    private static Command Policies()
    {
        var policies = new Command("policies", "Run-time policies per role, user or key: IP allowlists, models, quotas, budgets, time windows, PII and content filter");

        var listDb = DatabaseOption();
        var listJson = JsonOption();
        var list = new Command("list", "List policies") { listDb, listJson };
        list.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, listDb, ct);
            foreach (var p in await new PolicyService(store, new KeyService(store)).ListAsync(ct))
            {
                await Out(pr).WriteLineAsync(pr.GetValue(listJson)
                    ? JsonSerializer.Serialize(AdminEndpoints.PolicyView(p), Json)
                    : $"{p.Scope,-5} {p.Subject,-34} {Describe(PolicyService.FieldsOf(p))}");
            }

            return 0;
        }));

        var db = DatabaseOption();
        var scope = new Argument<string>("scope") { Description = "role, user or key" };
        var subject = new Argument<string>("subject") { Description = "Role name, user name or id, key id or prefix" };
        var cidrs = new Option<string?>("--allowed-cidrs") { Description = "Comma-separated source networks (IPv4/IPv6 CIDR)" };
        var models = new Option<string?>("--allowed-models") { Description = "Comma-separated model ids" };
        var rpm = new Option<int?>("--rpm") { Description = "Requests per minute" };
        var tpm = new Option<int?>("--tpm") { Description = "Tokens per minute" };
        var daily = new Option<long?>("--daily-tokens") { Description = "Daily token budget" };
        var monthly = new Option<long?>("--monthly-tokens") { Description = "Monthly token budget" };
        var windows = new Option<string?>("--time-windows") { Description = "When calls are allowed, e.g. 'mon-fri 08:00-18:00; sat 09:00-12:00'" };
        var zone = new Option<string?>("--time-zone") { Description = "IANA time zone of the windows, e.g. Asia/Shanghai" };
        var promptPii = new Option<string?>("--prompt-pii") { Description = "PII in prompts: allow, mask, tag or block" };
        var auditPii = new Option<string?>("--audit-pii") { Description = "PII in audit records: allow, mask or tag" };
        var phrases = new Option<string[]>("--blocked-phrase") { Description = "Banned phrase added to the content filter (repeatable)", AllowMultipleArgumentsPerToken = false };
        var unset = new Option<string[]>("--unset") { Description = "Clear a field (repeatable): " + string.Join(", ", UnsetNames) };
        var set = new Command("set", "Create or change a policy; fields not given keep their value") { db, scope, subject, cidrs, models, rpm, tpm, daily, monthly, windows, zone, promptPii, auditPii, phrases, unset };
        set.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, db, ct);
            var service = new PolicyService(store, new KeyService(store));
            var f = PolicyService.FieldsOf(await service.GetAsync(pr.GetValue(scope)!, pr.GetValue(subject)!, ct));
            f = f with
            {
                AllowedCidrs = pr.GetValue(cidrs) ?? f.AllowedCidrs,
                AllowedModels = pr.GetValue(models) ?? f.AllowedModels,
                RequestsPerMinute = pr.GetValue(rpm) ?? f.RequestsPerMinute,
                TokensPerMinute = pr.GetValue(tpm) ?? f.TokensPerMinute,
                DailyTokenBudget = pr.GetValue(daily) ?? f.DailyTokenBudget,
                MonthlyTokenBudget = pr.GetValue(monthly) ?? f.MonthlyTokenBudget,
                TimeWindows = pr.GetValue(windows) ?? f.TimeWindows,
                TimeZone = pr.GetValue(zone) ?? f.TimeZone,
                PromptPiiAction = pr.GetValue(promptPii) ?? f.PromptPiiAction,
                AuditPiiAction = pr.GetValue(auditPii) ?? f.AuditPiiAction,
                BlockedPhrases = pr.GetValue(phrases) is { Length: > 0 } added ? [.. f.BlockedPhrases ?? [], .. added] : f.BlockedPhrases,
            };
            foreach (var field in pr.GetValue(unset) ?? [])
            {
                f = Unset(f, field);
            }

            var saved = await service.SetAsync(pr.GetValue(scope)!, pr.GetValue(subject)!, f, ct);
            await Out(pr).WriteLineAsync($"Policy {saved.Scope} {saved.Subject}: {Describe(PolicyService.FieldsOf(saved))}");
            return 0;
        }));

        var rmDb = DatabaseOption();
        var rmScope = new Argument<string>("scope") { Description = "role, user or key" };
        var rmSubject = new Argument<string>("subject");
        var rm = new Command("rm", "Remove a policy") { rmDb, rmScope, rmSubject };
        rm.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, rmDb, ct);
            if (!await new PolicyService(store, new KeyService(store)).RemoveAsync(pr.GetValue(rmScope)!, pr.GetValue(rmSubject)!, ct))
            {
                await Err(pr).WriteLineAsync($"error: {pr.GetValue(rmScope)} '{pr.GetValue(rmSubject)}' has no policy");
                return 1;
            }

            await Out(pr).WriteLineAsync($"Removed the policy of {pr.GetValue(rmScope)} {pr.GetValue(rmSubject)}");
            return 0;
        }));

        policies.Add(list);
        policies.Add(set);
        policies.Add(rm);
        return policies;
    }

    private static readonly string[] UnsetNames =
        ["allowed-cidrs", "allowed-models", "rpm", "tpm", "daily-tokens", "monthly-tokens", "time-windows", "time-zone", "prompt-pii", "audit-pii", "blocked-phrases"];

    private static PolicyFields Unset(PolicyFields f, string field) => field switch
    {
        "allowed-cidrs" => f with { AllowedCidrs = null },
        "allowed-models" => f with { AllowedModels = null },
        "rpm" => f with { RequestsPerMinute = null },
        "tpm" => f with { TokensPerMinute = null },
        "daily-tokens" => f with { DailyTokenBudget = null },
        "monthly-tokens" => f with { MonthlyTokenBudget = null },
        "time-windows" => f with { TimeWindows = null },
        "time-zone" => f with { TimeZone = null },
        "prompt-pii" => f with { PromptPiiAction = null },
        "audit-pii" => f with { AuditPiiAction = null },
        "blocked-phrases" => f with { BlockedPhrases = null },
        _ => throw new FormatException($"--unset {field}: unknown field (one of {string.Join(", ", UnsetNames)})"),
    };

    private static string Describe(PolicyFields f)
    {
        var parts = new List<string>();
        void Add(string name, object? value)
        {
            if (value is not null)
            {
                parts.Add($"{name}={value}");
            }
        }

        Add("cidrs", f.AllowedCidrs);
        Add("models", f.AllowedModels);
        Add("rpm", f.RequestsPerMinute);
        Add("tpm", f.TokensPerMinute);
        Add("daily_tokens", f.DailyTokenBudget);
        Add("monthly_tokens", f.MonthlyTokenBudget);
        Add("windows", f.TimeWindows is null ? null : $"'{f.TimeWindows}'");
        Add("zone", f.TimeZone);
        Add("prompt_pii", f.PromptPiiAction);
        Add("audit_pii", f.AuditPiiAction);
        Add("blocked_phrases", f.BlockedPhrases is { Length: > 0 } b ? b.Length : null);
        return parts.Count == 0 ? "(empty)" : string.Join(' ', parts);
    }

    private static Command Encryption()
    {
        var cmd = new Command("encryption", "Master keys of the envelope encryption of stored prompts and responses");

        Option<string> ProviderOption() => new("--key-provider") { Description = "file (default) or env", DefaultValueFactory = _ => MasterKeys.File };
        Option<string?> FileOption() => new("--key-file") { Description = "Master key file (default ENCLAVE_HOME/keys/master.keys)" };
        Option<string> VariableOption() => new("--key-variable") { Description = "Environment variable of the env provider", DefaultValueFactory = _ => EnvironmentKeyProvider.DefaultVariable };

        var rdb = DatabaseOption();
        var rfile = FileOption();
        var rotate = new Command("rotate", "Add a new master key to the key file and re-wrap every stored data key under it") { rdb, rfile };
        rotate.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, rdb, ct);
            var file = pr.GetValue(rfile) ?? MasterKeys.DefaultFile(EnclaveHome.Resolve());
            var old = File.Exists(file) ? new FileKeyProvider(file).KeyIds.ToArray() : [];
            var id = FileKeyProvider.AddKey(file);
            var n = await RewrapAsync(store, new FileKeyProvider(file), ct);
            await Out(pr).WriteLineAsync($"New master key {id}; re-wrapped {n} data keys in the store.");
            if (old.Length > 0)
            {
                await Out(pr).WriteLineAsync($"Older keys ({string.Join(", ", old)}) are still needed for archives exported before now; remove their lines from {file} once those archives are gone.");
            }

            return 0;
        }));

        var wdb = DatabaseOption();
        var wprovider = ProviderOption();
        var wfile = FileOption();
        var wvar = VariableOption();
        var rewrap = new Command("rewrap", "Re-wrap every stored data key under the provider's current master key (after adding one to ENCLAVE_MASTER_KEYS, say)") { wdb, wprovider, wfile, wvar };
        rewrap.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, wdb, ct);
            var provider = MasterKeys.Provider(pr.GetValue(wprovider)!, pr.GetValue(wfile) ?? MasterKeys.DefaultFile(EnclaveHome.Resolve()), pr.GetValue(wvar)!);
            var n = await RewrapAsync(store, provider, ct);
            await Out(pr).WriteLineAsync($"Re-wrapped {n} data keys under master key {provider.CurrentKeyId}.");
            return 0;
        }));

        cmd.Add(rotate);
        cmd.Add(rewrap);
        return cmd;
    }

    private static async Task<long> RewrapAsync(GatewayStore store, IKeyProvider provider, CancellationToken ct)
    {
        var log = new AuditLog(store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(EnclaveHome.Resolve())))
        {
            Protector = new SecretProtector(provider),
        };
        return await log.RewrapAsync(ct);
    }

    private static Command AuditCommand()
    {
        var audit = new Command("audit", "Verify, search and export the audit trail");

        var vdb = DatabaseOption();
        var vkey = new Option<string?>("--signing-key") { Description = "Checkpoint key file (default ENCLAVE_HOME/keys/audit-ed25519.key)" };
        var varchive = new Option<string?>("--archive") { Description = "Verify this one archive file on its own" };
        var vpublic = new Option<string?>("--public-key") { Description = "With --archive: the Ed25519 public key (base64) the archive must be signed with, when the signing key file is not at hand" };
        var verify = new Command("verify", "Walk the hash chain across archives and the store, and the checkpoints; exit 0 and print the count when intact") { vdb, vkey, varchive, vpublic };
        verify.SetAction((pr, ct) => Guard(pr, async () =>
        {
            if (pr.GetValue(varchive) is { } archive)
            {
                var keyFile = pr.GetValue(vkey) ?? GatewayServiceCollectionExtensions.DefaultSigningKeyPath(EnclaveHome.Resolve());
                var publicKey = pr.GetValue(vpublic) ?? (File.Exists(keyFile) ? AuditSigner.LoadOrCreate(keyFile).PublicKey : null);
                if (publicKey is null)
                {
                    await Err(pr).WriteLineAsync($"error: no audit signing key at {keyFile}; pass --signing-key FILE or --public-key BASE64");
                    return 1;
                }

                var a = await AuditLog.VerifyArchiveAsync(archive, publicKey, ct);
                if (a.Intact)
                {
                    await Out(pr).WriteLineAsync($"OK {a.RecordCount} records ({a.FirstSequence}-{a.LastSequence})");
                    return 0;
                }

                await Err(pr).WriteLineAsync($"BROKEN{(a.FirstBadSequence is { } b ? $" at record {b}" : "")}: {a.Message}");
                return 2;
            }

            var store = await OpenAsync(pr, vdb, ct);
            var r = await OpenAudit(store, pr.GetValue(vkey)).VerifyChainAsync(ct);
            if (r.Intact)
            {
                await Out(pr).WriteLineAsync($"OK {r.RecordCount} records");
                return 0;
            }

            await Err(pr).WriteLineAsync($"BROKEN at record {r.FirstBadSequence}: {r.Message} ({r.RecordCount} records verified before it)");
            return 2;
        }));

        var sdb = DatabaseOption();
        var since = new Option<string?>("--since");
        var until = new Option<string?>("--until");
        var principal = new Option<string?>("--principal");
        var model = new Option<string?>("--model");
        var status = new Option<int?>("--status");
        var text = new Option<string?>("--text");
        var limit = new Option<int>("--limit") { DefaultValueFactory = _ => 100 };
        var json = JsonOption();
        var search = new Command("search", "Search audit records, newest first") { sdb, since, until, principal, model, status, text, limit, json };
        search.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, sdb, ct);
            var q = new AuditQuery(
                pr.GetValue(since) is { } s ? ParseDate(s) : null,
                pr.GetValue(until) is { } u ? ParseDate(u) : null,
                pr.GetValue(principal), pr.GetValue(model), pr.GetValue(status), pr.GetValue(text), pr.GetValue(limit));
            foreach (var r in await OpenAudit(store, null).SearchAsync(q, ct))
            {
                await Out(pr).WriteLineAsync(pr.GetValue(json)
                    ? JsonSerializer.Serialize(AdminEndpoints.AuditView(r), Json)
                    : $"#{r.Sequence} {Stamp(r.TimestampMs)} {r.Status} {r.Method} {r.Endpoint} principal={r.Principal ?? "-"} model={r.Model ?? "-"} ip={r.SourceIp ?? "-"}");
            }

            return 0;
        }));

        var edb = DatabaseOption();
        var before = new Option<string>("--before") { Description = "Export records older than this date", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "Archive file (gzip JSON lines with a signed trailer)", Required = true };
        var export = new Command("export", "Move old records to a signed archive and out of the hot store") { edb, before, output };
        export.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, edb, ct);
            var n = await OpenAudit(store, null).ExportAsync(ParseDate(pr.GetValue(before)!), pr.GetValue(output)!, ct);
            await Out(pr).WriteLineAsync($"Exported {n} records to {pr.GetValue(output)}");
            return 0;
        }));

        audit.Add(verify);
        audit.Add(search);
        audit.Add(export);
        return audit;
    }

    private static Command Db()
    {
        var cmd = new Command("db", "Gateway store maintenance");
        var mdb = DatabaseOption();
        var migrate = new Command("migrate", "Apply pending migrations") { mdb };
        migrate.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, mdb, ct, migrate: false);
            var pending = await store.PendingMigrationsAsync(ct);
            await store.MigrateAsync(ct);
            await Out(pr).WriteLineAsync($"Applied {pending.Count} migration(s) to the {store.Provider} store");
            return 0;
        }));

        var sdb = DatabaseOption();
        var status = new Command("status", "Show pending migrations") { sdb };
        status.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, sdb, ct, migrate: false);
            var pending = await store.PendingMigrationsAsync(ct);
            await Out(pr).WriteLineAsync(pending.Count == 0 ? "Up to date" : "Pending: " + string.Join(", ", pending));
            return pending.Count == 0 ? 0 : 3;
        }));

        cmd.Add(migrate);
        cmd.Add(status);
        return cmd;
    }
}
