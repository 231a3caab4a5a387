namespace Enclave.Engine.Backends;

/// <summary>
/// The narrow set of operations model architectures are written against. A backend owns its tensors' memory
/// (host for CPU, device for CUDA). Operations are enqueued in order and may run asynchronously; only
/// <see cref="Download"/> synchronises. Activations are F32; weights may be F32, F16 or BF16 and are read in their
/// stored type (never expanded to an F32 copy).
///
/// Shapes in the comments are row-major, last dimension contiguous; T is the number of tokens in the step.
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>Short name for logs and bench output, e.g. "cpu (avx512, 16 threads)".</summary>
    string Name { get; }

    /// <summary>Allocates an uninitialised tensor.</summary>
    DeviceTensor Allocate(DType dtype, params int[] shape);

    /// <summary>
    /// Makes a checkpoint tensor usable by the backend. The CPU backend references the memory-mapped bytes in
    /// place; a device backend copies them to device memory once.
    /// </summary>
    DeviceTensor LoadWeight(Formats.CheckpointTensor source);

    /// <summary>Copies raw little-endian bytes (already in the tensor's dtype) into the tensor.</summary>
    void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination);

    /// <summary>Copies F32 values into an F32 tensor.</summary>
    void Upload(ReadOnlySpan<float> source, DeviceTensor destination);

    /// <summary>Waits for queued work and copies an F32 tensor to the host.</summary>
    void Download(DeviceTensor source, Span<float> destination);

    /// <summary>
    /// Greedy token choice on the backend: tokenIds[r] = the index of the largest value of logits row r, the lowest
    /// index on ties, NaN never chosen, and 0 when no value exceeds negative infinity — exactly what
    /// <see cref="Sampling.Sampler.ArgMax"/> returns on the downloaded row. Waits for queued work like
    /// <see cref="Download"/>, but only the ids cross to the host. logits: [rows, vocab] F32; tokenIds: [rows].
    /// </summary>
    void Argmax(DeviceTensor logits, Span<int> tokenIds);

    /// <summary>
    /// Token choice on the backend for rows that only the raw logits and one uniform draw decide:
    /// tokenIds[r] = <see cref="Sampling.Sampler.SampleRow"/>(logits row r, rows[r]) — the argmax for a greedy row
    /// (exactly <see cref="Argmax"/>), else softmax at the temperature, top-k, min-p, top-p and the draw rows[r].U,
    /// with the host sampler's semantics. A backend that computes the probabilities in its own arithmetic may differ
    /// from the host only where a decision lies within float rounding of a boundary (a cumulative mass within ~1e-5 of
    /// top_p or of the draw, probabilities within a few ulp of each other or of the min_p threshold). Logits are
    /// finite or -inf; NaN is never chosen. Waits for queued work like <see cref="Download"/>, but only the ids cross
    /// to the host. logits: [rows, vocab] F32; rows, tokenIds: [rows].
    /// </summary>
    void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds);

    /// <summary>
    /// Whether <see cref="Sample"/> saves work over downloading the logits and sampling on the host (false by default),
    /// so the engine prefers it whenever every row of a step qualifies.
    /// </summary>
    bool SamplesOnBackend => false;

    /// <summary>Called once at the start of each step: copies the batch's ids, positions, slots and block tables to wherever the kernels read them.</summary>
    void PrepareStep(ForwardBatch batch);

    /// <summary>output[t, :] = table[batch.TokenIds[t], :]. table: [vocab, hidden] any float dtype; output: [T, hidden] F32.</summary>
    void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output);

    /// <summary>Row-wise RMSNorm over the last dimension: output = x / sqrt(mean(x²) + eps) * weight. x, output: [rows, n]; weight: [n].</summary>
    void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output);

    /// <summary>Fused residual add and norm: residual += x; output = RmsNorm(residual). residual, x, output: [rows, n].</summary>
    void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output);

    /// <summary>output = x · weightᵀ (+ bias). x: [T, in] F32; weight: [out, in] (nn.Linear layout); bias: [out] or null; output: [T, out] F32.</summary>
    void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output);

    /// <summary>
    /// Loads weights of one type and row width as consecutive rows of one allocation, or returns null where the backend
    /// gains nothing from that (the default: the CPU reads weights in place). Callers slice the rows back apart
    /// (<see cref="DeviceTensor.SliceRows"/>); products over the slices that share an input can then run as one
    /// (<see cref="MatMulShared"/>).
    /// </summary>
    DeviceTensor? LoadWeightStack(ReadOnlySpan<Formats.CheckpointTensor> sources) => null;

    /// <summary>Whether the backend's attention ops read and write a cache of this layout and element type (default: F32 only).</summary>
    bool SupportsKvCache(KvCache.KvCacheSpec spec) => spec.DType == DType.F32;

    /// <summary>Whether <see cref="LoadWeightStack"/> may stack at all (so that loaders read the sources only then).</summary>
    bool StacksWeights => false;

    /// <summary>
    /// Several products of the same input, as q/k/v or gate/up: for each target, output = x · weightᵀ (+ bias), with
    /// the shapes and types of <see cref="MatMul"/>. A backend may share work between them (one launch, one conversion
    /// of x); the results equal separate <see cref="MatMul"/> calls. Outputs must not alias x.
    /// </summary>
    void MatMulShared(DeviceTensor x, ReadOnlySpan<MatMulTarget> targets)
    {
        foreach (var target in targets)
        {
            MatMul(x, target.Weight, target.Bias, target.Output);
        }
    }

    /// <summary>
    /// output = x · Wᵀ (+ bias) with W kept quantized (FP8 blocks or 4-bit groups) and dequantized on the fly.
    /// x: [T, weight.InFeatures] F32; bias: [out] F32 or null; output: [T, weight.OutFeatures] F32.
    /// </summary>
    void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output);

    /// <summary>Rotates x in place at each token's position (batch.Positions). x: [T, heads, headDim] F32.</summary>
    void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope);

    /// <summary>output = silu(gate) * up, element-wise. gate, up, output: [T, n].</summary>
    void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output);

    /// <summary>
    /// A gated MLP's first half: gate.Output = silu(x · gateᵀ + b_gate) * (x · upᵀ + b_up), with the shapes and types
    /// of <see cref="MatMul"/>. up.Output is scratch the backend may leave unwritten. A backend may fuse the two products
    /// and the activation (the default runs them as <see cref="MatMulShared"/> and <see cref="SiluMul"/>).
    /// </summary>
    void SiluGatedMatMul(DeviceTensor x, MatMulTarget gate, MatMulTarget up)
    {
        MatMulShared(x, [gate, up]);
        SiluMul(gate.Output, up.Output, gate.Output);
    }

    /// <summary>
    /// A whole gated MLP: down.Output = (silu(x · gateᵀ + b_gate) * (x · upᵀ + b_up)) · downᵀ + b_down, with the shapes
    /// and types of <see cref="MatMul"/>. gate.Output and up.Output ([T, intermediate] F32) are scratch for the
    /// intermediate and hold nothing defined afterwards, so a backend may keep the intermediate in a narrower type there
    /// (the default runs <see cref="SiluGatedMatMul"/> into gate.Output, then <see cref="MatMul"/>).
    /// </summary>
    void SiluGatedMlp(DeviceTensor x, MatMulTarget gate, MatMulTarget up, MatMulTarget down)
    {
        SiluGatedMlpAsParts(this, x, gate, up, down);
    }

    /// <summary>Whether <see cref="SiluGatedMlp"/> does more than its default (so that a profile can still time the parts where it does not).</summary>
    bool FusesGatedMlp => false;

    /// <summary>The default <see cref="SiluGatedMlp"/>: <see cref="SiluGatedMatMul"/>, then <see cref="MatMul"/>, on <paramref name="backend"/>.</summary>
    static void SiluGatedMlpAsParts(IBackend backend, DeviceTensor x, MatMulTarget gate, MatMulTarget up, MatMulTarget down)
    {
        backend.SiluGatedMatMul(x, gate, up);
        backend.MatMul(gate.Output, down.Weight, down.Bias, down.Output);
    }

    /// <summary>output = a + b, element-wise, same shapes (output may alias a).</summary>
    void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output);

    /// <summary>
    /// Writes this step's k/v into the paged cache at batch.SlotMapping, then computes causal attention for each
    /// sequence's queries over its whole cached context (grouped-query: query head h reads kv head h / (heads / kvHeads)).
    /// q: [T, heads, headDim]; k, v: [T, kvHeads, headDim]; keyCache, valueCache: [blocks, blockSize, kvHeads, headDim];
    /// output: [T, heads, headDim]. scale multiplies q·k before softmax.
    /// </summary>
    void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output);

    /// <summary>
    /// <see cref="Rope"/> on q and k, then <see cref="Attention"/>, as one call so that a backend may rotate k on its way
    /// into the cache. q ends rotated in place; k ends holding either its rotated or its given values (nothing reads it
    /// after attention). Shapes as <see cref="Attention"/>.
    /// </summary>
    void RopeAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, RopeSpec rope, float scale, DeviceTensor output)
    {
        Rope(q, batch, rope);
        Rope(k, batch, rope);
        Attention(q, k, v, keyCache, valueCache, batch, scale, output);
    }

    /// <summary>output[i, :] = x[batch.LogitRows[i], :]. x: [T, n]; output: [batch.LogitRows.Length, n].</summary>
    void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output);

    /// <summary>
    /// Copies a block of columns between row-major matrices: output[r, outputOffset + c] = x[r, xOffset + c] for
    /// c in [0, count). x: [rows, xWidth]; output: [rows, outputWidth]. Splits and joins per-head parts (nope/rope).
    /// </summary>
    void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count);

    /// <summary>
    /// One small matmul per head: output[t, h, :] = weight[h] · x[t, h, :]. x: [T, heads, in] F32;
    /// weight: [heads, out, in] F32 (derived at load time); output: [T, heads, out] F32.
    /// </summary>
    void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output);

    /// <summary>
    /// MLA's compressed KV row, in place: latent [T, rank + rope] gets RMSNorm (normWeight [rank], eps) over columns
    /// [0, rank), kv_a_layernorm, and RoPE at the batch's positions (one head of rope.RotaryDim) over columns
    /// [rank, rank + rope), the rotation of k_pe. compressed [T, rank] and pe [T, rope] are scratch whose contents
    /// afterwards are undefined. The default copies the two parts out, normalises and rotates them, and copies them
    /// back (six operations, which a backend may do in one).
    /// </summary>
    void LatentNormRope(DeviceTensor latent, DeviceTensor normWeight, float eps, ForwardBatch batch, RopeSpec rope, DeviceTensor compressed, DeviceTensor pe) =>
        LatentNormRopeAsParts(this, latent, normWeight, eps, batch, rope, compressed, pe);

    /// <summary><see cref="LatentNormRope"/> as copies, RmsNorm and Rope on <paramref name="backend"/>.</summary>
    static void LatentNormRopeAsParts(IBackend backend, DeviceTensor latent, DeviceTensor normWeight, float eps, ForwardBatch batch, RopeSpec rope,
        DeviceTensor compressed, DeviceTensor pe)
    {
        int rank = compressed.Columns, ropeWidth = pe.Columns;
        backend.CopyColumns(latent, 0, compressed, 0, rank);
        backend.CopyColumns(latent, rank, pe, 0, ropeWidth);
        backend.RmsNorm(compressed, normWeight, eps, compressed);
        backend.Rope(pe.Reshape((int)pe.Rows, 1, ropeWidth), batch, rope);
        backend.CopyColumns(compressed, 0, latent, 0, rank);
        backend.CopyColumns(pe, 0, latent, rank, ropeWidth);
    }

    /// <summary>
    /// MLA's query in latent space: q [T, heads, nope + rope] → qFull [T, heads, rank + rope], each head's row being
    /// [keyAbsorb[h] · q_nope (rank values) | RoPE(q_pe) at the token's position]; keyAbsorb: [heads, rank, nope].
    /// qNope [T * heads, nope], qPe [T * heads, rope] and qLatent [T * heads, rank] are scratch whose contents
    /// afterwards are undefined. The default splits q, rotates, multiplies and joins (six operations).
    /// </summary>
    void LatentQuery(DeviceTensor q, DeviceTensor keyAbsorb, ForwardBatch batch, RopeSpec rope, DeviceTensor qFull, DeviceTensor qNope, DeviceTensor qPe, DeviceTensor qLatent) =>
        LatentQueryAsParts(this, q, keyAbsorb, batch, rope, qFull, qNope, qPe, qLatent);

    /// <summary><see cref="LatentQuery"/> as copies, Rope and HeadMatMul on <paramref name="backend"/>.</summary>
    static void LatentQueryAsParts(IBackend backend, DeviceTensor q, DeviceTensor keyAbsorb, ForwardBatch batch, RopeSpec rope, DeviceTensor qFull,
        DeviceTensor qNope, DeviceTensor qPe, DeviceTensor qLatent)
    {
        int tokens = q.Shape[0], heads = q.Shape[1], nope = qNope.Columns, ropeWidth = qPe.Columns, rank = qLatent.Columns;
        var rows = q.Reshape(tokens * heads, nope + ropeWidth);
        backend.CopyColumns(rows, 0, qNope, 0, nope);
        backend.CopyColumns(rows, nope, qPe, 0, ropeWidth);
        backend.Rope(qPe.Reshape(tokens, heads, ropeWidth), batch, rope);
        backend.HeadMatMul(qNope.Reshape(tokens, heads, nope), keyAbsorb, qLatent.Reshape(tokens, heads, rank));
        var full = qFull.Reshape(tokens * heads, rank + ropeWidth);
        backend.CopyColumns(qLatent, 0, full, 0, rank);
        backend.CopyColumns(qPe, 0, full, rank, ropeWidth);
    }

    /// <summary>
    /// Multi-head latent attention in the weight-absorbed form. Writes each token's latent row into the cache at
    /// batch.SlotMapping, then for every query head attends over the sequence's cached rows, keys being the whole
    /// row and values its first valueDim columns (the compressed latent; the rope key is only scored against).
    /// q: [T, heads, width] (query already folded into latent space, rope part last); latent: [T, width];
    /// latentCache: [blocks, blockSize, 1, width]; output: [T, heads, valueDim]. scale multiplies q·k before softmax.
    /// </summary>
    void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output);

    /// <summary>
    /// Chooses routing.TopK experts per token from router logits [T, experts] and a selection bias [experts] (or
    /// null); synchronises and returns the choice on the host: expertIds and weights are [T * TopK], token-major.
    /// </summary>
    void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights);

    /// <summary>
    /// Picks (tokens × top-k) up to which <see cref="MoeExperts"/> runs without the host, routing included, for a layer
    /// of <paramref name="experts"/> routed experts, so that a MoE model's decode steps may be recorded and replayed;
    /// 0 (the default, which routes on the host): never. Past it the model routes on the host, which runs each chosen
    /// expert as one product; a backend sets the bound where its own kernels stop being the faster way.
    /// </summary>
    int MoeExpertsOnBackendMaxPicks(int experts) => 0;

    /// <summary>
    /// A DeepSeekMoE layer's routed experts for a step, routing included: output[t] += Σ_k w[t, k] · down_e(silu(gate_e ·
    /// x[t]) * (up_e · x[t])) with (e, w)[t, k] the choice <see cref="MoeRoute"/> makes from the same logits and bias
    /// (the order of the sum over k may differ between backends, within float rounding). The experts' weights are stacked, in one type: gateUp [experts × 2 × intermediate, hidden]
    /// (expert e's gate rows, then its up rows, from row e × 2 × intermediate), down [experts × hidden, intermediate]
    /// (expert e's rows from e × hidden). x, output: [T, hidden] F32; routerLogits: [T, experts] F32; correctionBias:
    /// [experts] F32 or null. The default (<see cref="MoeExpertsAsParts"/>) routes on the host and runs each chosen
    /// expert once over the rows of all tokens that picked it.
    /// </summary>
    void MoeExperts(DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down, DeviceTensor output) =>
        MoeExpertsAsParts(this, x, routerLogits, correctionBias, routing, gateUp, down, output);

    /// <summary>The default <see cref="MoeExperts"/>, from <see cref="MoeRoute"/>, <see cref="GatherRows"/>, the gated MLP products and <see cref="ScatterAddRows"/>.</summary>
    static void MoeExpertsAsParts(IBackend backend, DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing,
        DeviceTensor gateUp, DeviceTensor down, DeviceTensor output)
    {
        var plan = MoeExpertShapes.Check(x, routerLogits, routing, gateUp, down, output);
        int tokens = plan.Tokens, hidden = plan.Hidden, inter = plan.Intermediate, topK = routing.TopK, picks = tokens * topK;
        if (picks == 0)
        {
            return;
        }

        var expertIds = new int[picks];
        var weights = new float[picks];
        backend.MoeRoute(routerLogits, correctionBias, routing, expertIds, weights);

        var offsets = new int[routing.Experts + 1];
        var rows = new int[picks];
        var rowWeights = new float[picks];
        MoeRouter.GroupByExpert(expertIds, weights, topK, offsets, rows, rowWeights);

        using var gathered = backend.Allocate(DType.F32, picks, hidden);   // [P, hidden], grouped by expert
        using var gate = backend.Allocate(DType.F32, picks, inter);        // [P, intermediate]
        using var up = backend.Allocate(DType.F32, picks, inter);          // [P, intermediate]
        using var expertOut = backend.Allocate(DType.F32, picks, hidden);  // [P, hidden]
        backend.GatherRows(x, rows, gathered);
        for (var e = 0; e < routing.Experts; e++)
        {
            var count = offsets[e + 1] - offsets[e];
            if (count == 0)
            {
                continue;
            }

            var first = offsets[e];
            backend.SiluGatedMlp(
                gathered.SliceRows(first, count),
                new MatMulTarget(gateUp.SliceRows(e * 2 * inter, inter), null, gate.SliceRows(first, count)),
                new MatMulTarget(gateUp.SliceRows((e * 2 * inter) + inter, inter), null, up.SliceRows(first, count)),
                new MatMulTarget(down.SliceRows(e * hidden, hidden), null, expertOut.SliceRows(first, count)));
        }

        backend.ScatterAddRows(expertOut, rows, rowWeights, output);
    }

    /// <summary>output[i, :] = x[rows[i], :]. x: [T, n]; output: [rows.Length, n].</summary>
    void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output);

    /// <summary>output[rows[i], :] += weights[i] * x[i, :], in order of i. x: [rows.Length, n]; output: [T, n].</summary>
    void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output);

    // Encoder (BERT / XLM-RoBERTa) operations: bidirectional attention over packed sequences with no KV cache.

    /// <summary>
    /// output[t, :] = table[ids[t], :]: a lookup by explicit ids (word, position or token-type ids) rather than the
    /// step's token ids. table: [rows, n] any float dtype; output: [ids.Length, n] F32.
    /// </summary>
    void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output);

    /// <summary>
    /// Row-wise LayerNorm over the last dimension, as torch.nn.LayerNorm in float32:
    /// output = (x - mean) / sqrt(var + eps) * weight + bias (biased variance). x, output: [rows, n]; weight, bias: [n] F32.
    /// output may alias x.
    /// </summary>
    void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output);

    /// <summary>output = x * 0.5 * (1 + erf(x / sqrt(2))), the exact GELU (hidden_act "gelu"). Same shapes; may alias.</summary>
    void Gelu(DeviceTensor x, DeviceTensor output);

    /// <summary>output = tanh(x), element-wise. Same shapes; may alias.</summary>
    void Tanh(DeviceTensor x, DeviceTensor output);

    /// <summary>
    /// Non-causal attention over a batch of packed variable-length sequences: sequence s owns tokens
    /// [sequenceStarts[s], sequenceStarts[s + 1]) and every query attends to every key of its own sequence only
    /// (the padding mask of a padded batch, without the padding). q, k, v, output: [T, heads, headDim] F32;
    /// sequenceStarts: [sequences + 1] with sequenceStarts[0] = 0 and sequenceStarts[^1] = T. scale multiplies q·k.
    /// </summary>
    void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output);
}

/// <summary>One product of <see cref="IBackend.MatMulShared"/>: weight [out, in], bias [out] or null, output [T, out].</summary>
public readonly record struct MatMulTarget(DeviceTensor Weight, DeviceTensor? Bias, DeviceTensor Output);
