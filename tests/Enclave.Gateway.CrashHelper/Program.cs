// Appends audit records from several concurrent writers until killed; prints the committed count.
// Used by the crash test: the parent kills this process mid-burst and verifies the chain.
using Enclave.Gateway.Audit;
using Enclave.Gateway.Store;

var store = GatewayStore.Resolve(args[0], args[1]);
await store.MigrateAsync();
var log = new AuditLog(store, AuditSigner.LoadOrCreate(args[2])) { CheckpointEvery = 10 };
long committed = 0;
await Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
{
    while (true)
    {
        await log.AppendAsync(new AuditEntry { Principal = "writer-" + w, Method = "POST", Endpoint = "/v1/chat/completions", Status = 200, Details = new string('x', 2000) });
        var n = Interlocked.Increment(ref committed);
        if (n % 10 == 0)
        {
            Console.WriteLine(n);
        }
    }
})));
