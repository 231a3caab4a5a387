namespace Enclave.Server.Tests.Support;

/// <summary>One server with every fixture model, shared by the tests that do not need special settings.</summary>
public sealed class SharedServer : IAsyncLifetime
{
    public TestServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await TestServer.StartAsync(null, true, Enclave.Engine.Tests.Support.Fixtures.ModelNames);

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class SharedServerCollection : ICollectionFixture<SharedServer>
{
    public const string Name = "shared server";
}
