using Enclave.Deploy.Tests.Support;
using k8s;
using k8s.Models;

namespace Enclave.Deploy.Tests;

/// <summary>
/// deploy/helm/enclave rendered by `helm template` for each role, every manifest parsed strictly into the
/// Kubernetes client's typed models (an unknown or misspelt field fails), then its probes, resources, labels and
/// cross-references checked.
/// </summary>
public sealed class HelmChartTests
{
    private static readonly string Chart = ExternalTool.Repo("deploy", "helm", "enclave");

    private static readonly Dictionary<string, Type> CustomResources = new()
    {
        ["monitoring.coreos.com/v1/ServiceMonitor"] = typeof(V1ServiceMonitor),
    };

    private static (int Code, string Output, string Error) Template(string release, params string[] args) =>
        ExternalTool.Run(ExternalTool.Helm!, null, ["template", release, Chart, "--namespace", "llm", .. args]);

    private static List<object> Render(string role)
    {
        var (code, output, error) = Template("enclave-" + role, "-f", Path.Combine(Chart, $"values-{role}.yaml"));
        Assert.True(code == 0, error);
        return KubernetesYaml.LoadAllFromString(output, CustomResources, strict: true);
    }

    private static T One<T>(List<object> manifests) => Assert.Single(manifests.OfType<T>());

    private static void AssertSelects(IDictionary<string, string> selector, IDictionary<string, string> labels)
    {
        Assert.NotEmpty(selector);
        foreach (var (key, value) in selector)
        {
            Assert.True(labels.TryGetValue(key, out var actual) && actual == value, $"selector {key}={value} does not match the pod labels");
        }
    }

    [HelmTheory]
    [InlineData("all-in-one")]
    [InlineData("engine")]
    [InlineData("gateway")]
    public void EachRoleRendersValidManifestsWithProbesResourcesAndLabels(string role)
    {
        var manifests = Render(role);
        var release = "enclave-" + role;

        // Every object carries the chart's labels and the role as its component.
        foreach (var o in manifests.Cast<IKubernetesObject<V1ObjectMeta>>())
        {
            Assert.Equal(release, o.Metadata.Name.Replace("-models", string.Empty, StringComparison.Ordinal).Replace("-data", string.Empty, StringComparison.Ordinal));
            Assert.Equal("enclave", o.Metadata.Labels["app.kubernetes.io/name"]);
            Assert.Equal(release, o.Metadata.Labels["app.kubernetes.io/instance"]);
            Assert.Equal(role, o.Metadata.Labels["app.kubernetes.io/component"]);
        }

        var deployment = One<V1Deployment>(manifests);
        var pod = deployment.Spec.Template;
        AssertSelects(deployment.Spec.Selector.MatchLabels, pod.Metadata.Labels);
        Assert.False(pod.Spec.AutomountServiceAccountToken);
        Assert.True(pod.Spec.SecurityContext.RunAsNonRoot);
        Assert.NotEqual(0, pod.Spec.SecurityContext.RunAsUser);
        var container = Assert.Single(pod.Spec.Containers);
        Assert.False(container.SecurityContext.AllowPrivilegeEscalation);
        Assert.True(container.SecurityContext.ReadOnlyRootFilesystem);
        Assert.Equal(["ALL"], container.SecurityContext.Capabilities.Drop);
        var http = Assert.Single(container.Ports);
        Assert.Equal(("http", 8000), (http.Name, http.ContainerPort));

        // Liveness on /health (answers while models load), readiness on /ready (only once they have).
        Assert.Equal("/health", container.LivenessProbe.HttpGet.Path);
        Assert.Equal("http", container.LivenessProbe.HttpGet.Port.Value);
        Assert.Equal("/ready", container.ReadinessProbe.HttpGet.Path);
        Assert.Equal("http", container.ReadinessProbe.HttpGet.Port.Value);
        Assert.Equal("/health", container.StartupProbe.HttpGet.Path);
        Assert.True(container.StartupProbe.FailureThreshold * container.StartupProbe.PeriodSeconds >= 300, "model loading needs minutes before liveness applies");

        Assert.Equal("serve", container.Args[0]);
        Assert.Equal("0.0.0.0", container.Args[container.Args.IndexOf("--host") + 1]);
        Assert.Equal("/var/lib/enclave", Assert.Single(container.Env, e => e.Name == "ENCLAVE_HOME").Value);
        var mounts = container.VolumeMounts.ToDictionary(m => m.Name);
        var volumes = pod.Spec.Volumes.ToDictionary(v => v.Name);
        Assert.All(mounts.Keys, name => Assert.True(volumes.ContainsKey(name), $"mount {name} has no volume"));
        Assert.Equal("/var/lib/enclave", mounts["data"].MountPath);

        var gpu = container.Resources.Limits?.TryGetValue("nvidia.com/gpu", out var limit) == true ? limit.ToString() : null;
        var claims = manifests.OfType<V1PersistentVolumeClaim>().ToDictionary(c => c.Metadata.Name);
        if (role == "gateway")
        {
            Assert.Null(gpu);
            Assert.False(container.Resources.Requests.ContainsKey("nvidia.com/gpu"));
            Assert.Null(pod.Spec.Tolerations);
            Assert.Equal("http://enclave-engine:8000", container.Args[container.Args.IndexOf("--upstream") + 1]);
            Assert.DoesNotContain("--model", container.Args);
            Assert.DoesNotContain("models", mounts.Keys);
            Assert.Equal("engine-api-key", Assert.Single(container.Env, e => e.Name == "ENCLAVE_UPSTREAM_API_KEY").ValueFrom.SecretKeyRef.Key);
            Assert.Equal("enclave-database", Assert.Single(container.Env, e => e.Name == "Enclave__Gateway__Database").ValueFrom.SecretKeyRef.Name);
            Assert.Equal("/etc/enclave/keys/audit-ed25519.key", Assert.Single(container.Env, e => e.Name == "Enclave__Gateway__AuditSigningKeyFile").Value);
            Assert.Equal("/etc/enclave/keys", mounts["keys"].MountPath);
            Assert.Empty(claims);
        }
        else
        {
            // One GPU requested and limited (the device plugin needs both equal), models read-only from their PVC.
            Assert.Equal("1", gpu);
            Assert.Equal("1", container.Resources.Requests["nvidia.com/gpu"].ToString());
            Assert.Contains(pod.Spec.Tolerations, t => t.Key == "nvidia.com/gpu");
            Assert.Equal("deepseek-r1-distill-qwen-7b=/models/DeepSeek-R1-Distill-Qwen-7B", container.Args[container.Args.IndexOf("--model") + 1]);
            Assert.True(mounts["models"].ReadOnlyProperty);
            var modelClaim = volumes["models"].PersistentVolumeClaim.ClaimName;
            Assert.Equal(release + "-models", modelClaim);
            Assert.Equal("200Gi", claims[modelClaim].Spec.Resources.Requests["storage"].ToString());
            Assert.Equal("keep", claims[modelClaim].Metadata.Annotations["helm.sh/resource-policy"]);
        }

        if (role == "engine")
        {
            Assert.Equal("engine-api-key", Assert.Single(container.Env, e => e.Name == "ENCLAVE_API_KEY").ValueFrom.SecretKeyRef.Key);
            Assert.NotNull(volumes["data"].EmptyDir);
            Assert.DoesNotContain(container.Env, e => e.Name.StartsWith("Enclave__Gateway__", StringComparison.Ordinal));
        }

        if (role == "all-in-one")
        {
            Assert.Equal(1, deployment.Spec.Replicas);
            Assert.Equal("Recreate", deployment.Spec.Strategy.Type);
            Assert.Equal(release + "-data", volumes["data"].PersistentVolumeClaim.ClaimName);
            Assert.Contains(release + "-data", claims.Keys);
            Assert.DoesNotContain(manifests, m => m is V2HorizontalPodAutoscaler);
        }
        else
        {
            // Keys come from the Secret, mounted read-only for the owner only.
            Assert.Equal("enclave-keys", volumes["keys"].Secret.SecretName);
            Assert.Equal(Convert.ToInt32("400", 8), volumes["keys"].Secret.DefaultMode);
            Assert.True(mounts["keys"].ReadOnlyProperty);
        }

        var service = One<V1Service>(manifests);
        AssertSelects(service.Spec.Selector, pod.Metadata.Labels);
        Assert.Equal("http", Assert.Single(service.Spec.Ports).TargetPort.Value);

        var pdb = One<V1PodDisruptionBudget>(manifests);
        AssertSelects(pdb.Spec.Selector.MatchLabels, pod.Metadata.Labels);
        Assert.Equal("1", pdb.Spec.MinAvailable.Value);

        var policy = One<V1NetworkPolicy>(manifests);
        AssertSelects(policy.Spec.PodSelector.MatchLabels, pod.Metadata.Labels);
        Assert.Equal(["Ingress", "Egress"], policy.Spec.PolicyTypes);
        Assert.All(policy.Spec.Ingress, rule => Assert.Equal("http", Assert.Single(rule.Ports).Port.Value));
        Assert.Contains(policy.Spec.Ingress, rule => rule.FromProperty.Any(p => p.NamespaceSelector?.MatchLabels["kubernetes.io/metadata.name"] == "monitoring"));
        if (role == "engine")
        {
            // Only gateway pods may call an engine.
            var callers = policy.Spec.Ingress[0].FromProperty;
            Assert.Equal("gateway", Assert.Single(callers).PodSelector.MatchLabels["app.kubernetes.io/component"]);
        }

        var monitor = One<V1ServiceMonitor>(manifests);
        AssertSelects(monitor.Spec.Selector.MatchLabels, service.Metadata.Labels);
        var endpoint = Assert.Single(monitor.Spec.Endpoints);
        Assert.Equal(("http", "/metrics"), (endpoint.Port, endpoint.Path));
        Assert.Contains(endpoint.Relabelings, r => r.TargetLabel == "job" && r.Replacement == "enclave");

        var account = One<V1ServiceAccount>(manifests);
        Assert.Equal(pod.Spec.ServiceAccountName, account.Metadata.Name);
    }

    [HelmFact]
    public void TheEngineScalesOnTheWaitingQueueThroughPrometheusAdapter()
    {
        var manifests = Render("engine");
        var deployment = One<V1Deployment>(manifests);
        var hpa = One<V2HorizontalPodAutoscaler>(manifests);
        Assert.Null(deployment.Spec.Replicas); // the HPA owns the replica count
        Assert.Equal(("Deployment", deployment.Metadata.Name), (hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name));
        Assert.Equal((2, 8), (hpa.Spec.MinReplicas ?? 0, hpa.Spec.MaxReplicas));
        var metric = Assert.Single(hpa.Spec.Metrics);
        Assert.Equal("Pods", metric.Type);
        Assert.Equal("enclave_requests_waiting", metric.Pods.Metric.Name);
        Assert.Equal("4", metric.Pods.Target.AverageValue.ToString());

        // The adapter rule that serves that metric reads the queue gauge the server really exports.
        var adapter = File.ReadAllText(ExternalTool.Repo("deploy", "monitoring", "prometheus-adapter-values.yaml"));
        Assert.Contains("vllm:num_requests_waiting", adapter, StringComparison.Ordinal);
        Assert.Contains("as: enclave_requests_waiting", adapter, StringComparison.Ordinal);
    }

    [HelmFact]
    public void TheChartPassesHelmLintForEveryRole()
    {
        foreach (var role in new[] { "all-in-one", "engine", "gateway" })
        {
            var (code, output, error) = ExternalTool.Run(ExternalTool.Helm!, null, "lint", Chart, "-f", Path.Combine(Chart, $"values-{role}.yaml"));
            Assert.True(code == 0, role + ": " + output + error);
        }
    }

    [HelmTheory]
    [InlineData("role=proxy", "role must be all-in-one, engine or gateway")]
    [InlineData("role=engine", "needs secrets.existingSecret")]
    [InlineData("replicaCount=3", "needs database.existingSecret")]
    public void ARenderWithMissingOrWrongValuesFailsAndSaysWhy(string set, string message)
    {
        var (code, _, error) = Template("enclave", "--set", set);
        Assert.NotEqual(0, code);
        Assert.Contains(message, error, StringComparison.Ordinal);
    }
}
