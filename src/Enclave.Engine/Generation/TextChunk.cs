using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;

namespace Enclave.Engine.Generation;

/// <summary>
/// One generated token as the caller sees it: the text it made printable (possibly empty while a multi-byte
/// character or a possible stop string is held back), its log-probability, and on the last chunk why generation ended.
/// </summary>
public readonly record struct TextChunk(
    string Text,
    int TokenId,
    float Logprob,
    TokenLogprob[]? TopLogprobs,
    FinishReason? Finish,
    string? MatchedStop);
