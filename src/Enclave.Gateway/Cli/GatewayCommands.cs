using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Enclave.Gateway.Audit;
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

    public static IEnumerable<Command> Create() => [Keys(), Users(), Roles(), AuditCommand(), Db()];

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

    private static AuditLog OpenAudit(GatewayStore store, string? keyFile) =>
        new(store, AuditSigner.LoadOrCreate(keyFile ?? GatewayServiceCollectionExtensions.DefaultSigningKeyPath(EnclaveHome.Resolve())));

    private static Command AuditCommand()
    {
        var audit = new Command("audit", "Verify, search and export the audit trail");

        var vdb = DatabaseOption();
        var vkey = new Option<string?>("--signing-key") { Description = "Checkpoint key file (default ENCLAVE_HOME/keys/audit-ed25519.key)" };
        var verify = new Command("verify", "Walk the hash chain and checkpoints; exit 0 and print the count when intact") { vdb, vkey };
        verify.SetAction((pr, ct) => Guard(pr, async () =>
        {
            var store = await OpenAsync(pr, vdb, ct);
            var r = await OpenAudit(store, pr.GetValue(vkey)).VerifyAsync(ct);
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
