namespace Enclave.Server.Tests.Support;

/// <summary>One server with all three fixture models, shared by the tests that do not need special settings.</summary>
public sealed class SharedServer : IAsyncLifetime
{
    public TestServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await TestServer.StartAsync(null, true, "tiny-qwen3", "tiny-qwen2-r1", "tiny-llama3");

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class SharedServerCollection : ICollectionFixture<SharedServer>
{
    public const string Name = "shared server";
}
