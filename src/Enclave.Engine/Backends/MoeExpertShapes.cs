namespace Enclave.Engine.Backends;

/// <summary>The sizes of one <see cref="IBackend.MoeExperts"/> call, checked against each other.</summary>
public readonly record struct MoeExpertShapes(int Tokens, int Hidden, int Intermediate)
{
    /// <summary>
    /// Checks x [T, hidden], routerLogits [T, experts], gateUp [experts × 2 × intermediate, hidden], down [experts ×
    /// hidden, intermediate] (one type) and output [T, hidden] against the routing; throws naming what does not fit.
    /// </summary>
    public static MoeExpertShapes Check(DeviceTensor x, DeviceTensor routerLogits, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down, DeviceTensor output)
    {
        var experts = routing.Experts;
        var fits = x.Shape.Length == 2 && experts > 0 && routing.TopK > 0 && routing.TopK <= experts
            && routerLogits.Shape.Length == 2 && routerLogits.Shape[0] == x.Shape[0] && routerLogits.Shape[1] == experts
            && gateUp.Shape.Length == 2 && gateUp.Shape[1] == x.Shape[1] && gateUp.Shape[0] % (2 * experts) == 0
            && down.Shape.Length == 2 && down.DType == gateUp.DType && down.Shape[0] == experts * x.Shape[1] && down.Shape[1] * 2 * experts == gateUp.Shape[0]
            && output.Shape.Length == 2 && output.Shape[0] == x.Shape[0] && output.Shape[1] == x.Shape[1];
        if (!fits)
        {
            throw new ArgumentException(
                $"MoeExperts: x [{string.Join(", ", x.Shape)}], router logits [{string.Join(", ", routerLogits.Shape)}], gate_up [{string.Join(", ", gateUp.Shape)}] {gateUp.DType}, down [{string.Join(", ", down.Shape)}] {down.DType} and output [{string.Join(", ", output.Shape)}] do not fit {routing}: expected x [T, hidden], logits [T, experts], gate_up [experts * 2 * intermediate, hidden], down [experts * hidden, intermediate] of one type, output [T, hidden]");
        }

        return new MoeExpertShapes(x.Shape[0], x.Shape[1], down.Shape[1]);
    }
}
