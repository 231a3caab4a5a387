using Enclave.Engine.Backends;
using Enclave.Engine.Formats;


namespace Enclave.Engine.Models.Layers;

/// <summary>Loads named tensors onto the backend, checking each shape against what the config implies.</summary>
public sealed class WeightLoader(IWeightSource source, IBackend backend, ModelConfig config)
{
    public IBackend Backend => backend;

    public ModelConfig Config => config;

    public bool Contains(string name) => source.Contains(name);

    public DeviceTensor Load(string name, params int[] expectedShape) => backend.LoadWeight(Source(name, expectedShape));

    /// <summary>The stored tensor <paramref name="name"/>, checked against the shape the config implies.</summary>
    private CheckpointTensor Source(string name, int[] expectedShape)
    {
        if (source is DummyWeights dummy)
        {
            return dummy.Create(name, expectedShape);
        }

        if (!source.Contains(name))
        {
            throw new CheckpointFormatException(
                $"{source.Description}: tensor '{name}' is missing, but {config.Architecture} with this config.json needs it");
        }

        var tensor = source.Get(name);
        if (!tensor.Shape.SequenceEqual(expectedShape))
        {
            throw new CheckpointFormatException(
                $"{tensor.File}: tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], but {config.Path} implies [{string.Join(", ", expectedShape)}]");
        }

        return tensor;
    }

    /// <summary>
    /// Loads nn.Linear layers that read the same input (q/k/v, gate/up). Where they are plain weights of one type and
    /// the backend stacks them (<see cref="IBackend.LoadWeightStack"/>), each layer's weight is a row slice of one
    /// allocation, so their products can run as one; otherwise each loads as <see cref="LoadLinear"/> does.
    /// </summary>
    public Linear[] LoadLinears(string[] prefixes, int inFeatures, int[] outFeatures, bool bias)
    {
        if (LoadStack(prefixes, outFeatures, inFeatures) is { } stack)
        {
            var layers = new Linear[prefixes.Length];
            var row = 0;
            for (var i = 0; i < prefixes.Length; i++)
            {
                layers[i] = new Linear(stack.SliceRows(row, outFeatures[i]), bias ? LoadAsF32(prefixes[i] + ".bias", outFeatures[i]) : null);
                row += outFeatures[i];
            }

            return layers;
        }

        return [.. prefixes.Select((prefix, i) => LoadLinear(prefix, inFeatures, outFeatures[i], bias))];
    }

    /// <summary>
    /// Loads the plain weights of nn.Linear layers <paramref name="prefixes"/> ([rows[i], columns] each, one type) as
    /// consecutive rows of one backend allocation (<see cref="IBackend.LoadWeightStack"/>), or returns null where the
    /// backend does not stack weights, the checkpoint stores any of them quantized, or they differ in type.
    /// </summary>
    public DeviceTensor? LoadStack(string[] prefixes, int[] rows, int columns)
    {
        var q = config.Quantization;
        if (!backend.StacksWeights || (q is not null && source is not DummyWeights && !prefixes.All(q.Skips)))
        {
            return null;
        }

        var sources = new CheckpointTensor[prefixes.Length];
        for (var i = 0; i < prefixes.Length; i++)
        {
            sources[i] = Source(prefixes[i] + ".weight", [rows[i], columns]);
        }

        return backend.LoadWeightStack(sources);
    }

    /// <summary>
    /// Loads a small tensor (a bias) as F32 whatever its stored type: kernels add biases in fp32, and a bias is a
    /// vector, so the copy costs nothing next to the matrices, which are never converted.
    /// </summary>
    public DeviceTensor LoadAsF32(string name, params int[] expectedShape)
    {
        var tensor = Load(name, expectedShape);
        if (tensor.DType == DType.F32)
        {
            return tensor;
        }

        var source = SourceTensor(name);
        var values = new float[source.ElementCount];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = Backends.Reference.ReferenceBackend.ReadElement(source.Bytes, source.DType, i);
        }

        var converted = backend.Allocate(DType.F32, expectedShape);
        backend.Upload(values, converted);
        tensor.Dispose();
        return converted;
    }

    /// <summary>
    /// Loads nn.Linear <paramref name="prefix"/>: <c>.weight</c> (+ <c>.bias</c>) as stored, or, when config.json has a
    /// quantization_config and the checkpoint stores this layer quantized, its FP8 blocks + <c>weight_scale_inv</c> or
    /// AWQ/GPTQ <c>qweight</c>/<c>qzeros</c>/<c>scales</c>. Layers the publisher left unquantized (DeepSeek's router,
    /// modules_to_not_convert) load as plain weights.
    /// </summary>
    public Linear LoadLinear(string prefix, int inFeatures, int outFeatures, bool bias)
    {
        var b = bias ? LoadAsF32(prefix + ".bias", outFeatures) : null;
        var q = config.Quantization;
        if (q is null || source is DummyWeights || q.Skips(prefix))
        {
            return new Linear(Load(prefix + ".weight", outFeatures, inFeatures), b);
        }

        if (q.Method == Formats.Quantization.QuantizationMethod.Fp8Block)
        {
            if (!source.Contains(prefix + ".weight_scale_inv"))
            {
                return new Linear(Load(prefix + ".weight", outFeatures, inFeatures), b);
            }

            var storedWeight = source.Get(prefix + ".weight");
            var storedScales = source.Get(prefix + ".weight_scale_inv");
            if (storedWeight.DType != DType.F8E4M3 || storedScales.DType != DType.F32)
            {
                throw new CheckpointFormatException(
                    $"{storedWeight.File}: '{prefix}.weight' is {storedWeight.DType} with {storedScales.DType} scales; quant_method fp8 needs F8_E4M3 weights and F32 weight_scale_inv");
            }

            var data = Load(prefix + ".weight", outFeatures, inFeatures);
            var scales = Load(prefix + ".weight_scale_inv", CeilDiv(outFeatures, q.BlockRows), CeilDiv(inFeatures, q.BlockColumns));
            return new Linear(new QuantizedWeight(WeightEncoding.Fp8Block, outFeatures, inFeatures, q.BlockRows, q.BlockColumns, data, scales, null), b);
        }

        if (!source.Contains(prefix + ".qweight"))
        {
            return new Linear(Load(prefix + ".weight", outFeatures, inFeatures), b);
        }

        var packed = RepackInt4(prefix, inFeatures, outFeatures);
        var dataTensor = backend.Allocate(DType.U8, outFeatures, inFeatures / 2);
        backend.UploadBytes(packed.Data, dataTensor);
        var scaleTensor = backend.Allocate(DType.F32, outFeatures, packed.Groups);
        backend.Upload(packed.Scales, scaleTensor);
        var zeroTensor = backend.Allocate(DType.U8, outFeatures, packed.Groups);
        backend.UploadBytes(packed.Zeros, zeroTensor);
        return new Linear(new QuantizedWeight(WeightEncoding.Int4Group, outFeatures, inFeatures, 1, q.GroupSize, dataTensor, scaleTensor, zeroTensor), b);
    }

    private Formats.Quantization.Int4Repack.Result RepackInt4(string prefix, int inFeatures, int outFeatures)
    {
        var q = config.Quantization!;
        var qweight = source.Get(prefix + ".qweight");
        var qzeros = source.Get(prefix + ".qzeros");
        var scales = source.Get(prefix + ".scales");
        return q.Method == Formats.Quantization.QuantizationMethod.Awq
            ? Formats.Quantization.Int4Repack.FromAwq(qweight, qzeros, scales, inFeatures, outFeatures, q.GroupSize)
            : Formats.Quantization.Int4Repack.FromGptq(qweight, qzeros, scales,
                source.Contains(prefix + ".g_idx") ? source.Get(prefix + ".g_idx") : null, inFeatures, outFeatures, q.GroupSize, q.GptqZeroOffset);
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    /// <summary>
    /// Reads a tensor's values to the host as F32 (for weights the model rearranges once at load time), dequantizing
    /// an FP8 block or AWQ/GPTQ weight by its format's definition.
    /// </summary>
    public float[] ReadF32(string name, params int[] expectedShape)
    {
        var q = config.Quantization;
        if (q is not null && source is not DummyWeights && name.EndsWith(".weight", StringComparison.Ordinal) && expectedShape.Length == 2)
        {
            var prefix = name[..^".weight".Length];
            int outFeatures = expectedShape[0], inFeatures = expectedShape[1];
            if (q.Method == Formats.Quantization.QuantizationMethod.Fp8Block && source.Contains(prefix + ".weight_scale_inv"))
            {
                var encoded = source.Get(name);
                if (encoded.DType != DType.F8E4M3 || !encoded.Shape.SequenceEqual(expectedShape))
                {
                    throw new CheckpointFormatException(
                        $"{encoded.File}: '{name}' is {encoded.DType}[{string.Join(", ", encoded.Shape)}]; quant_method fp8 needs F8_E4M3[{outFeatures}, {inFeatures}]");
                }

                var fp8 = encoded.Bytes;
                var scales = ReadF32(prefix + ".weight_scale_inv", CeilDiv(outFeatures, q.BlockRows), CeilDiv(inFeatures, q.BlockColumns));
                var scaleColumns = CeilDiv(inFeatures, q.BlockColumns);
                var values = new float[outFeatures * inFeatures];
                for (var o = 0; o < outFeatures; o++)
                {
                    for (var i = 0; i < inFeatures; i++)
                    {
                        values[(o * inFeatures) + i] = Formats.Quantization.Fp8E4M3.ToSingle(fp8[(o * inFeatures) + i])
                            * scales[((o / q.BlockRows) * scaleColumns) + (i / q.BlockColumns)];
                    }
                }

                return values;
            }

            if (q.Method != Formats.Quantization.QuantizationMethod.Fp8Block && !source.Contains(name) && source.Contains(prefix + ".qweight"))
            {
                var packed = RepackInt4(prefix, inFeatures, outFeatures);
                var values = new float[outFeatures * inFeatures];
                for (var o = 0; o < outFeatures; o++)
                {
                    for (var i = 0; i < inFeatures; i++)
                    {
                        values[(o * inFeatures) + i] = Formats.Quantization.Int4Repack.Dequantize(packed, inFeatures, q.GroupSize, o, i);
                    }
                }

                return values;
            }
        }

        Load(name, expectedShape).Dispose();
        var stored = SourceTensor(name);
        var result = new float[stored.ElementCount];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = Backends.Reference.ReferenceBackend.ReadElement(stored.Bytes, stored.DType, i);
        }

        return result;
    }

    private CheckpointTensor SourceTensor(string name) => source is DummyWeights dummy ? dummy.Get(name) : source.Get(name);

    public DeviceTensor? LoadOptional(string name, params int[] expectedShape) =>
        source.Contains(name) ? Load(name, expectedShape) : null;
}
