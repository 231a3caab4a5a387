using Enclave.Gateway.Audit;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Limits;
using Enclave.Gateway.Pii;
using Enclave.Gateway.Security;
using Enclave.Gateway.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Enclave.Gateway.Hosting;

public static class GatewayServiceCollectionExtensions
{
    /// <summary>
    /// Registers the gateway: store, key/user services, audit log, limiters, PII detector, content
    /// filter and a start-up task that migrates the store and bootstraps the first admin key.
    /// </summary>
    public static IServiceCollection AddEnclaveGateway(this IServiceCollection services, IConfiguration configuration, Action<GatewayOptions>? configure = null)
    {
        services.AddOptions<GatewayOptions>().Bind(configuration.GetSection(GatewayOptions.Section));
        if (configure is not null)
        {
            services.PostConfigure(configure);
        }

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            return GatewayStore.Resolve(o.Database, o.ResolveHome());
        });
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            var keys = new KeyService(sp.GetRequiredService<GatewayStore>(), sp.GetRequiredService<TimeProvider>())
            {
                CacheTtl = TimeSpan.FromSeconds(Math.Max(0, o.KeyCacheSeconds)),
                DefaultZone = TimeWindows.Zone(o.TimeZone),
            };
            if (sp.GetService<GatewayRedis>() is { } redis)
            {
                redis.Attach(keys);
            }

            return keys;
        });
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            return string.IsNullOrWhiteSpace(o.Redis) ? null! : GatewayRedis.Connect(o.Redis, o.RedisKeyPrefix, sp.GetRequiredService<ILogger<GatewayRedis>>());
        });
        services.AddSingleton<UserService>();
        services.AddSingleton<PolicyService>();
        services.AddSingleton<TokenUsageStore>();
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            var time = sp.GetRequiredService<TimeProvider>();
            ICounterStore counters = sp.GetService<GatewayRedis>() is { } redis
                ? new RedisCounterStore(redis.Connection, o.RedisKeyPrefix + "limit:")
                : new MemoryCounterStore(sp.GetRequiredService<TokenUsageStore>(), time);
            return new GatewayLimiter(counters, TimeWindows.Zone(o.TimeZone), time);
        });
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            return new FailedAuthLimiter(sp.GetRequiredService<TimeProvider>())
            {
                MaxFailures = o.FailedAuthMaxFailures,
                Window = TimeSpan.FromSeconds(o.FailedAuthWindowSeconds),
            };
        });
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            return AuditSigner.LoadOrCreate(o.AuditSigningKeyFile ?? DefaultSigningKeyPath(o.ResolveHome()));
        });
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<GatewayOptions>>().Value;
            return new AuditLog(sp.GetRequiredService<GatewayStore>(), sp.GetRequiredService<AuditSigner>(), o.AuditHash)
            {
                CheckpointEvery = o.AuditCheckpointEvery,
                Protector = o.EncryptAudit ? MasterKeys.Protector(o.KeyProvider, o.MasterKeyFile ?? MasterKeys.DefaultFile(o.ResolveHome()), o.MasterKeyVariable, o.EncryptionAlgorithm) : null,
            };
        });
        services.AddSingleton<PiiDetector>();
        services.AddSingleton(sp => new ContentFilter(sp.GetRequiredService<IOptions<GatewayOptions>>().Value.BlockedPhrases));
        services.AddHostedService<GatewayStartup>();
        services.AddHostedService<AuditRetentionService>();
        return services;
    }

    public static string DefaultSigningKeyPath(string home) => Path.Combine(home, "keys", "audit-ed25519.key");

    /// <summary>Adds routing (if not already added) and the gateway middleware. Call before mapping endpoints.</summary>
    public static IApplicationBuilder UseEnclaveGateway(this IApplicationBuilder app)
    {
        app.UseRouting();
        app.UseMiddleware<GatewayMiddleware>();
        return app;
    }
}

/// <summary>Migrates the store and, on an empty one, creates and prints the bootstrap admin key once.</summary>
internal sealed class GatewayStartup(
    IOptions<GatewayOptions> options,
    GatewayStore store,
    KeyService keys,
    AuditLog audit,
    ILogger<GatewayStartup> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var o = options.Value;
        // Bad time zone or policy settings fail the start, not the first request.
        TimeWindows.Zone(o.TimeZone);
        if (o.Migrate)
        {
            await store.MigrateAsync(cancellationToken);
        }

        if (o.Bootstrap && !o.NoAuth && await keys.BootstrapAsync(cancellationToken) is { } created)
        {
            logger.LogWarning("Created the bootstrap admin key {Prefix}; it is printed once on standard output", created.Key.Prefix);
            Console.Out.WriteLine("Bootstrap admin API key (shown once, store it now):");
            Console.Out.WriteLine(created.Secret);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        try
        {
            await audit.CheckpointAsync(cancellationToken);
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "Could not write the shutdown audit checkpoint");
        }
    }
}
