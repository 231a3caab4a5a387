using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>XLMRobertaModel (bge-m3): the BERT encoder with RoBERTa's position ids and one token type.</summary>
public class XLMRobertaModel(ModelConfig config, IWeightSource weights, IBackend backend, string? prefix = null)
    : BertStyleEncoder(config, weights, backend, prefix)
{
    /// <summary>Positions start after padding_idx, so the table's first padding_idx + 1 rows are never used.</summary>
    public override int MaxSequenceLength => Config.MaxPositionEmbeddings - PadTokenId - 1;

    /// <summary>
    /// RoBERTa's create_position_ids_from_input_ids: non-padding tokens count from padding_idx + 1, padding tokens sit
    /// at padding_idx.
    /// </summary>
    protected override int[] PositionIds(EncoderBatch batch)
    {
        var positions = new int[batch.TokenCount];
        for (var s = 0; s < batch.SequenceCount; s++)
        {
            var count = 0;
            for (var t = batch.SequenceStarts[s]; t < batch.SequenceStarts[s + 1]; t++)
            {
                positions[t] = batch.TokenIds[t] == PadTokenId ? PadTokenId : PadTokenId + ++count;
            }
        }

        return positions;
    }
}
