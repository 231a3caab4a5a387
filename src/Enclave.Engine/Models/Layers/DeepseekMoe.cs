using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// DeepseekV2Moe / DeepseekV3MoE: shared experts on every token plus routed experts chosen by the gate. Tokens are
/// dispatched grouped per expert: the router's choices are sorted by expert, each chosen expert runs once on the
/// gathered rows of all tokens that picked it, and the results are scatter-added back with their routing weights.
/// </summary>
public sealed class DeepseekMoe : IFeedForward
{
    private readonly Linear gate;
    private readonly DeviceTensor? correctionBias;
    private readonly GatedMlp[] experts;
    private readonly GatedMlp sharedExperts;
    private readonly MoeRouting routing;

    // Per-step routing scratch, host-side, owned by this layer and used only by the engine loop thread.
    private readonly int[] offsets;
    private readonly int[] next;
    private int[] expertIds = [];
    private float[] weights = [];
    private int[] rows = [];
    private float[] rowWeights = [];

    public DeepseekMoe(WeightLoader loader, string prefix, DeepseekConfig ds, MoeRouting routing, bool hasCorrectionBias)
    {
        var hidden = loader.Config.HiddenSize;
        this.routing = routing;
        offsets = new int[routing.Experts + 1];
        next = new int[routing.Experts];
        gate = Linear.Load(loader, prefix + ".gate", hidden, ds.NRoutedExperts, false);
        correctionBias = hasCorrectionBias ? loader.LoadAsF32(prefix + ".gate.e_score_correction_bias", ds.NRoutedExperts) : null;
        experts = new GatedMlp[ds.NRoutedExperts];
        for (var e = 0; e < experts.Length; e++)
        {
            experts[e] = new GatedMlp(loader, $"{prefix}.experts.{e}", hidden, ds.MoeIntermediateSize, false);
        }

        sharedExperts = new GatedMlp(loader, prefix + ".shared_experts", hidden, ds.MoeIntermediateSize * ds.NSharedExperts, false);
    }

    public void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, DeviceTensor output)
    {
        var tokens = (int)x.Rows;
        var hidden = x.Columns;
        var logits = scratch.Get("moe.router_logits", tokens, routing.Experts); // [T, experts]
        gate.Forward(backend, x, logits);
        var picks = tokens * routing.TopK;
        if (expertIds.Length != picks)
        {
            // Sized to the pick count (the backends take whole arrays); a steady decode batch reuses them every step.
            expertIds = new int[picks];
            weights = new float[picks];
            rows = new int[picks];
            rowWeights = new float[picks];
        }

        backend.MoeRoute(logits, correctionBias, routing, expertIds, weights);

        // Counting sort of the (token, expert) picks by expert: rows[i] is the token of the i-th pick in expert order.
        Array.Clear(offsets);
        foreach (var e in expertIds)
        {
            offsets[e + 1]++;
        }

        for (var e = 0; e < routing.Experts; e++)
        {
            offsets[e + 1] += offsets[e];
        }

        Array.Copy(offsets, next, routing.Experts);
        for (var i = 0; i < picks; i++)
        {
            var slot = next[expertIds[i]]++;
            rows[slot] = i / routing.TopK;
            rowWeights[slot] = weights[i];
        }

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
