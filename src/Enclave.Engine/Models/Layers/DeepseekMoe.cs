using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// DeepseekV2Moe / DeepseekV3MoE: shared experts on every token plus routed experts chosen by the gate. Tokens are
/// dispatched grouped per expert: the router's choices are sorted by expert, each chosen expert runs once on the
/// gathered rows of all tokens that picked it, and the results are scatter-added back with their routing weights.
/// Where the backend routes on its own (<see cref="IBackend.MoeExpertsOnBackendMaxPicks"/>), the experts' weights are
/// stacked per layer and steps within its bound go to <see cref="IBackend.MoeExperts"/> whole, with no host decision
/// (so decode steps can be recorded); larger steps, and other backends, route on the host here.
/// </summary>
public sealed class DeepseekMoe : IFeedForward
{
    private readonly Linear gate;
    private readonly DeviceTensor? correctionBias;
    private readonly GatedMlp[] experts;
    private readonly GatedMlp sharedExperts;
    private readonly MoeRouting routing;
    private readonly DeviceTensor? gateUpStack; // [experts * 2 * intermediate, hidden], expert e's gate rows then its up rows
    private readonly DeviceTensor? downStack;   // [experts * hidden, intermediate]

    // Per-step routing scratch, host-side, owned by this layer and used only by the engine loop thread.
    private readonly int[] offsets;
    private int[] expertIds = [];
    private float[] weights = [];
    private int[] rows = [];
    private float[] rowWeights = [];

    public DeepseekMoe(WeightLoader loader, string prefix, DeepseekConfig ds, MoeRouting routing, bool hasCorrectionBias)
    {
        var hidden = loader.Config.HiddenSize;
        this.routing = routing;
        offsets = new int[routing.Experts + 1];
        gate = Linear.Load(loader, prefix + ".gate", hidden, ds.NRoutedExperts, false);
        correctionBias = hasCorrectionBias ? loader.LoadAsF32(prefix + ".gate.e_score_correction_bias", ds.NRoutedExperts) : null;
        experts = new GatedMlp[ds.NRoutedExperts];
        var inter = ds.MoeIntermediateSize;
        if (loader.Backend.MoeExpertsOnBackendMaxPicks(ds.NRoutedExperts) > 0 && loader.Config.HiddenAct is "silu" or "swish")
        {
            var count = ds.NRoutedExperts;
            var expertPrefixes = Enumerable.Range(0, count).Select(e => $"{prefix}.experts.{e}").ToArray();
            gateUpStack = loader.LoadStack([.. expertPrefixes.SelectMany(p => new[] { p + ".gate_proj", p + ".up_proj" })], [.. Enumerable.Repeat(inter, 2 * count)], hidden);
            downStack = gateUpStack is null ? null : loader.LoadStack([.. expertPrefixes.Select(p => p + ".down_proj")], [.. Enumerable.Repeat(hidden, count)], inter);
            if (downStack is null || downStack.DType != gateUpStack!.DType)
            {
                gateUpStack?.Dispose();
                downStack?.Dispose();
                (gateUpStack, downStack) = (null, null);
            }
        }

        for (var e = 0; e < experts.Length; e++)
        {
            experts[e] = gateUpStack is null || downStack is null
                ? new GatedMlp(loader, $"{prefix}.experts.{e}", hidden, inter, false)
                : new GatedMlp(
                    new Linear(gateUpStack.SliceRows(e * 2 * inter, inter), null),
                    new Linear(gateUpStack.SliceRows((e * 2 * inter) + inter, inter), null),
                    new Linear(downStack.SliceRows(e * hidden, hidden), null));
        }

        sharedExperts = new GatedMlp(loader, prefix + ".shared_experts", hidden, ds.MoeIntermediateSize * ds.NSharedExperts, false);
    }

    /// <summary>Whether the routed experts are stacked for <see cref="IBackend.MoeExperts"/> (steps within <see cref="BackendPickLimit"/> then need no host decision).</summary>
    public bool RoutesOnBackend => gateUpStack is not null;

    /// <summary>The most picks (tokens × top-k) of a step that goes to <see cref="IBackend.MoeExperts"/> on <paramref name="backend"/> (0 where the experts are not stacked).</summary>
    public int BackendPickLimit(IBackend backend) =>
        gateUpStack is null ? 0 : backend.MoeExpertsOnBackendMaxPicks(routing.Experts);

    /// <summary>Top-k: the picks each token makes.</summary>
    public int PicksPerToken => routing.TopK;

    public void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, DeviceTensor output)
    {
        var tokens = (int)x.Rows;
        var hidden = x.Columns;
        var logits = scratch.Get("moe.router_logits", tokens, routing.Experts); // [T, experts]
        gate.Forward(backend, x, logits);
        var picks = tokens * routing.TopK;
        if (gateUpStack is not null && picks <= BackendPickLimit(backend))
        {
            sharedExperts.Forward(backend, scratch, x, output);
            backend.MoeExperts(x, logits, correctionBias, routing, gateUpStack, downStack!, output);
            return;
        }

        if (expertIds.Length != picks)
        {
            // Sized to the pick count (the backends take whole arrays); a steady decode batch reuses them every step.
            expertIds = new int[picks];
            weights = new float[picks];
            rows = new int[picks];
            rowWeights = new float[picks];
        }

        backend.MoeRoute(logits, correctionBias, routing, expertIds, weights);

        MoeRouter.GroupByExpert(expertIds, weights, routing.TopK, offsets, rows, rowWeights);

        var gathered = scratch.Get("moe.gathered", picks, hidden);   // [T * topK, hidden], grouped by expert
        var expertOut = scratch.Get("moe.expert_out", picks, hidden); // [T * topK, hidden]
        backend.GatherRows(x, rows, gathered);
        for (var e = 0; e < routing.Experts; e++)
        {
            var count = offsets[e + 1] - offsets[e];
            if (count > 0)
            {
                experts[e].Forward(backend, scratch, gathered.SliceRows(offsets[e], count), expertOut.SliceRows(offsets[e], count));
            }
        }

        sharedExperts.Forward(backend, scratch, x, output);
        backend.ScatterAddRows(expertOut, rows, rowWeights, output);
    }
}
