namespace Enclave.Engine.Generation;

/// <summary>The waiting queue is full; the caller should retry later (HTTP 429).</summary>
public sealed class EngineBusyException(string message) : Exception(message);

/// <summary>The prompt plus the requested tokens do not fit the model's context or the KV cache (HTTP 400 context_length_exceeded).</summary>
public sealed class ContextLengthExceededException(string message) : ArgumentException(message);
