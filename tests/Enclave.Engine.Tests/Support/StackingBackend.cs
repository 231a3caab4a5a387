using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Tests.Support;

/// <summary>
/// The CPU backend as a device backend lays a model out: weights stacked where a loader asks
/// (<see cref="IBackend.LoadWeightStack"/>, copied into one allocation) and MoE layers handed to
/// <see cref="IBackend.MoeExperts"/> whole (its default, host-routed implementation), so the stacked-expert path of
/// the model code runs, and is counted, on machines without a GPU.
/// </summary>
public sealed class StackingBackend() : DelegatingBackend(new CpuBackend())
{
    public override string Name => "stacking " + Inner.Name;

    /// <summary><see cref="MoeExperts"/> calls so far.</summary>
    public int MoeExpertsCalls { get; private set; }

    public override bool StacksWeights => true;

    /// <summary>Picks an expert on average up to which MoE steps go to <see cref="MoeExperts"/>, a cutoff like a GPU backend's, so that long prompts take the host path.</summary>
    public const int PicksPerExpert = 16;

    public override int MoeExpertsOnBackendMaxPicks(int experts) => Math.Min(4096, PicksPerExpert * experts);

    public override DeviceTensor? LoadWeightStack(ReadOnlySpan<CheckpointTensor> sources)
    {
        var dtype = sources[0].DType;
        var columns = sources[0].Shape[1];
        var rows = 0;
        foreach (var source in sources)
        {
            if (source.DType != dtype || source.Shape.Length != 2 || source.Shape[1] != columns)
            {
                return null;
            }

            rows += source.Shape[0];
        }

        var stack = Inner.Allocate(dtype, rows, columns);
        var row = 0;
        foreach (var source in sources)
        {
            Inner.UploadBytes(source.Bytes, stack.SliceRows(row, source.Shape[0]));
            row += source.Shape[0];
        }

        return stack;
    }

    public override void MoeExperts(DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down,
        DeviceTensor output)
    {
        MoeExpertsCalls++;
        IBackend.MoeExpertsAsParts(this, x, routerLogits, correctionBias, routing, gateUp, down, output);
    }
}
