using System.Diagnostics;

namespace Enclave.Knowledge;

/// <summary>
/// The knowledge base's trace span: <c>knowledge.retrieve</c> around each search (in a chat completion with the
/// "knowledge" extension it sits between the gateway span and the engine's spans). Free when nobody listens.
/// </summary>
public static class KnowledgeTelemetry
{
    public const string SourceName = "Enclave.Knowledge";

    public static ActivitySource Source { get; } = new(SourceName);
}
