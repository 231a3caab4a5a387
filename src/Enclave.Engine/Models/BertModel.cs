using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>BertModel (bge-small/base/large zh/en): absolute positions counted from 0 in each sequence.</summary>
public sealed class BertModel(ModelConfig config, IWeightSource weights, IBackend backend) : BertStyleEncoder(config, weights, backend)
{
    public override int MaxSequenceLength => Config.MaxPositionEmbeddings;

    protected override int[] PositionIds(EncoderBatch batch)
    {
        var positions = new int[batch.TokenCount];
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            for (var t = batch.SequenceStarts[s]; t < batch.SequenceStarts[s + 1]; t++)
            {
                positions[t] = t - batch.SequenceStarts[s];
            }
        }

        return positions;
    }
}
