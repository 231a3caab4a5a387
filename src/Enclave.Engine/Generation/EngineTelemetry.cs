using System.Diagnostics;
using Enclave.Engine.Scheduling;

namespace Enclave.Engine.Generation;

/// <summary>
/// Trace spans for each sequence's life in the engine: <c>engine.queue</c> (submitted until first scheduled),
/// <c>engine.prefill</c> (first scheduled until its first token) and <c>engine.decode</c> (first token until it
/// finished), children of whatever activity was current when the request was submitted (the HTTP request's span
/// in the server). The engine runs many sequences per step on its own thread, so a span cannot be open around
/// the work; instead each phase's boundaries are stamped on the sequence (three clock reads per request, none per
/// token) and the spans are emitted with those times once the sequence leaves the engine. With no listener, as
/// when tracing is off, nothing is stamped or emitted.
/// </summary>
public static class EngineTelemetry
{
    public const string SourceName = "Enclave.Engine";

    public static ActivitySource Source { get; } = new(SourceName);

    /// <summary>Called on submission: remembers the caller's trace context when someone listens.</summary>
    internal static void Submitted(Sequence sequence)
    {
        if (!Source.HasListeners())
        {
            return;
        }

        sequence.Trace = new SequenceTrace(Activity.Current?.Context ?? default, DateTime.UtcNow);
    }

    /// <summary>Called by the engine loop each time a sequence is in a step.</summary>
    internal static void Scheduled(Sequence sequence)
    {
        if (sequence.Trace is { ScheduledAt: null } trace)
        {
            trace.ScheduledAt = DateTime.UtcNow;
        }
    }

    /// <summary>Called by the engine loop after a token was sampled for the sequence.</summary>
    internal static void Sampled(Sequence sequence)
    {
        if (sequence.Trace is { FirstTokenAt: null } trace)
        {
            trace.FirstTokenAt = DateTime.UtcNow;
        }
    }

    /// <summary>Emits the sequence's spans once it has left the engine (finished, aborted or failed).</summary>
    internal static void Finished(Sequence sequence)
    {
        if (sequence.Trace is not { } trace)
        {
            return;
        }

        sequence.Trace = null;
        var end = DateTime.UtcNow;
        var finish = sequence.Finish switch
        {
            FinishReason.Stop => "stop",
            FinishReason.Length => "length",
            _ => "abort",
        };
        Emit("engine.queue", trace, trace.SubmittedAt, trace.ScheduledAt ?? end, a => a.SetTag("enclave.sequence.id", sequence.Id));
        if (trace.ScheduledAt is { } scheduled)
        {
            Emit("engine.prefill", trace, scheduled, trace.FirstTokenAt ?? end, a =>
            {
                a.SetTag("enclave.sequence.id", sequence.Id);
                a.SetTag("gen_ai.usage.input_tokens", sequence.PromptLength);
                a.SetTag("enclave.prefix_cache.hit_tokens", sequence.CachedPromptTokens);
            });
        }

        if (trace.FirstTokenAt is { } first)
        {
            Emit("engine.decode", trace, first, end, a =>
            {
                a.SetTag("enclave.sequence.id", sequence.Id);
                a.SetTag("gen_ai.usage.output_tokens", sequence.OutputLength);
                a.SetTag("gen_ai.response.finish_reasons", new[] { finish });
                a.SetTag("enclave.preemptions", sequence.Preemptions);
            });
        }
    }

    private static void Emit(string name, SequenceTrace trace, DateTime start, DateTime end, Action<Activity> tag)
    {
        using var activity = Source.StartActivity(name, ActivityKind.Internal, trace.Parent, startTime: start);
        if (activity is null)
        {
            return;
        }

        if (activity.IsAllDataRequested)
        {
            tag(activity);
        }

        activity.SetEndTime(end < start ? start : end);
    }
}

/// <summary>The trace context and phase boundaries of one traced sequence.</summary>
internal sealed class SequenceTrace(ActivityContext parent, DateTime submittedAt)
{
    public ActivityContext Parent { get; } = parent;

    public DateTime SubmittedAt { get; } = submittedAt;

    public DateTime? ScheduledAt { get; set; }

    public DateTime? FirstTokenAt { get; set; }
}
