using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Enclave.Deploy.Tests.Support;

/// <summary>
/// Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1), which the Kubernetes client has no model for:
/// the fields the chart writes, so strict parsing still rejects anything else.
/// </summary>
public sealed class V1ServiceMonitor : IKubernetesObject<V1ObjectMeta>
{
    [JsonPropertyName("apiVersion")]
    public string ApiVersion { get; set; } = "monitoring.coreos.com/v1";

    [JsonPropertyName("kind")]
    public string Kind { get; set; } = "ServiceMonitor";

    [JsonPropertyName("metadata")]
    public V1ObjectMeta Metadata { get; set; } = new();

    [JsonPropertyName("spec")]
    public ServiceMonitorSpec Spec { get; set; } = new();
}

public sealed class ServiceMonitorSpec
{
    [JsonPropertyName("selector")]
    public V1LabelSelector Selector { get; set; } = new();

    [JsonPropertyName("endpoints")]
    public List<ServiceMonitorEndpoint> Endpoints { get; set; } = [];
}

public sealed class ServiceMonitorEndpoint
{
    [JsonPropertyName("port")]
    public string? Port { get; set; }

    [JsonPropertyName("path")]
    public string? Path { get; set; }

    [JsonPropertyName("interval")]
    public string? Interval { get; set; }

    [JsonPropertyName("relabelings")]
    public List<RelabelConfig> Relabelings { get; set; } = [];
}

public sealed class RelabelConfig
{
    [JsonPropertyName("targetLabel")]
    public string? TargetLabel { get; set; }

    [JsonPropertyName("replacement")]
    public string? Replacement { get; set; }
}
