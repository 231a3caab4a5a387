namespace Enclave.Engine.Backends.Cpu;

/// <summary>DeepSeekMoE routing for CPU tensors: the shared host router over the tensors' memory.</summary>
internal static unsafe class CpuMoeRoute
{
    public static void Run(CpuTensor logits, CpuTensor? bias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        logits.RequireDType(DType.F32);
        bias?.RequireDType(DType.F32);
        if (logits.Columns != routing.Experts)
        {
            throw new ArgumentException($"MoeRoute: logits {logits} do not fit {routing}");
        }

        MoeRouter.Route(logits.F32Span, bias is null ? default : bias.F32Span, routing, expertIds, weights);
    }
}
