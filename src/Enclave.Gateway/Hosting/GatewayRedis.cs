using Enclave.Gateway.Security;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Enclave.Gateway.Hosting;

/// <summary>
/// The Redis connection shared by the distributed limiter and cache invalidation: a revocation,
/// user change or policy change on one replica is published and every replica drops its cached
/// principals at once (the key cache TTL remains the bound should a message be lost).
/// </summary>
public sealed class GatewayRedis(IConnectionMultiplexer connection, string prefix, ILogger logger) : IDisposable
{
    public IConnectionMultiplexer Connection { get; } = connection;

    private RedisChannel Channel => RedisChannel.Literal(prefix + "invalidate");

    public static GatewayRedis Connect(string configuration, string prefix, ILogger logger)
    {
        var options = ConfigurationOptions.Parse(configuration);
        // Keep retrying in the background rather than failing start-up while Redis restarts.
        options.AbortOnConnectFail = false;
        return new GatewayRedis(ConnectionMultiplexer.Connect(options), prefix, logger);
    }

    /// <summary>Subscribes <paramref name="keys"/> to invalidations and routes its broadcasts through Redis.</summary>
    public void Attach(KeyService keys)
    {
        // Asynchronous so start-up does not wait for Redis; the multiplexer restores the
        // subscription whenever it (re)connects.
        _ = Connection.GetSubscriber().SubscribeAsync(Channel, (_, _) => keys.InvalidateCache()).ContinueWith(
            t => logger.LogWarning(t.Exception, "Redis subscription for cache invalidation not confirmed yet; it is retried on reconnect"),
            CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        keys.Broadcast = async _ =>
        {
            try
            {
                await Connection.GetSubscriber().PublishAsync(Channel, "keys");
            }
            catch (RedisException e)
            {
                logger.LogWarning(e, "Could not publish a cache invalidation; other replicas follow within the key cache TTL");
            }
        };
    }

    public void Dispose() => Connection.Dispose();
}
