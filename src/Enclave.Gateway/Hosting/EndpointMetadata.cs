using Microsoft.AspNetCore.Builder;

namespace Enclave.Gateway.Hosting;

/// <summary>Declares the permission an endpoint needs. Endpoints under protected prefixes without it are refused.</summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Class | AttributeTargets.Delegate, AllowMultiple = false)]
public sealed class RequirePermissionAttribute(string permission) : Attribute
{
    public string Permission { get; } = permission;
}

/// <summary>Marks an endpoint (e.g. a health probe) as reachable without a key.</summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Class | AttributeTargets.Delegate, AllowMultiple = false)]
public sealed class GatewayAnonymousAttribute : Attribute;

public static class EndpointConventionExtensions
{
    public static TBuilder RequirePermission<TBuilder>(this TBuilder builder, string permission)
        where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new RequirePermissionAttribute(permission));

    public static TBuilder AllowGatewayAnonymous<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new GatewayAnonymousAttribute());
}
