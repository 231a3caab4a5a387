using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Enclave.Server.Hosting;

/// <summary>
/// Prometheus text exposition (format 0.0.4) of one System.Diagnostics.Metrics meter, under the instruments' own
/// names. The maintained exporters cannot carry vLLM's names: OpenTelemetry's SDK drops instruments whose names
/// contain ':', and prometheus-net 8 rejects ':' in metric names, yet dashboards built for vLLM query
/// <c>vllm:num_requests_running</c> and friends. So the instruments stay on System.Diagnostics.Metrics (any
/// OpenTelemetry pipeline can still listen to them) and this listener renders them for /metrics. Counters and
/// histograms accumulate here; observable instruments are read at each scrape.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    private readonly MeterListener listener = new();
    private readonly Lock gate = new();
    private readonly List<Instrument> instruments = [];
    private readonly Dictionary<Instrument, Dictionary<string, double>> values = [];
    private readonly Dictionary<Instrument, Dictionary<string, HistogramState>> histograms = [];

    public PrometheusExporter(Meter meter)
    {
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (!ReferenceEquals(instrument.Meter, meter))
            {
                return;
            }

            lock (gate)
            {
                instruments.Add(instrument);
            }

            l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i, v, tags));
        listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Record(i, v, tags));
        listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Record(i, v, tags));
        listener.Start();
    }

    private sealed class HistogramState(double[] bounds)
    {
        public double[] Bounds { get; } = bounds;

        public long[] Counts { get; } = new long[bounds.Length + 1];

        public double Sum { get; set; }

        public long Count { get; set; }
    }

    private static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0)
        {
            return string.Empty;
        }

        var sorted = tags.ToArray();
        Array.Sort(sorted, (a, b) => string.CompareOrdinal(a.Key, b.Key));
        var s = new StringBuilder();
        foreach (var (key, value) in sorted)
        {
            s.Append(s.Length == 0 ? string.Empty : ",").Append(key).Append("=\"").Append(Escape(Convert.ToString(value, CultureInfo.InvariantCulture) ?? string.Empty)).Append('"');
        }

        return s.ToString();
    }

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var labels = Labels(tags);
        lock (gate)
        {
            if (instrument is Histogram<double> h)
            {
                if (!histograms.TryGetValue(instrument, out var series))
                {
                    histograms[instrument] = series = [];
                }

                if (!series.TryGetValue(labels, out var state))
                {
                    series[labels] = state = new HistogramState(h.Advice?.HistogramBucketBoundaries?.ToArray() ?? [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
                }

                var bucket = 0;
                while (bucket < state.Bounds.Length && value > state.Bounds[bucket])
                {
                    bucket++;
                }

                state.Counts[bucket]++;
                state.Sum += value;
                state.Count++;
                return;
            }

            if (!values.TryGetValue(instrument, out var current))
            {
                values[instrument] = current = [];
            }

            // Plain counters add deltas; observable counters and gauges report the current value.
            current[labels] = instrument.IsObservable || instrument is not Counter<long> and not Counter<int> and not Counter<double>
                ? value
                : current.GetValueOrDefault(labels) + value;
        }
    }

    /// <summary>Reads the observable instruments and renders every series.</summary>
    public string Render()
    {
        lock (gate)
        {
            foreach (var i in instruments.Where(i => i.IsObservable && values.ContainsKey(i)))
            {
                values[i].Clear(); // a model that went away stops reporting
            }
        }

        listener.RecordObservableInstruments();
        var s = new StringBuilder();
        static string Number(double v) => double.IsPositiveInfinity(v) ? "+Inf" : double.IsNegativeInfinity(v) ? "-Inf" : v.ToString("R", CultureInfo.InvariantCulture);
        static string Series(string name, string labels, string? extra = null)
        {
            var all = extra is null ? labels : labels.Length == 0 ? extra : labels + "," + extra;
            return all.Length == 0 ? name : $"{name}{{{all}}}";
        }

        lock (gate)
        {
            foreach (var instrument in instruments)
            {
                var type = instrument switch
                {
                    Histogram<double> => "histogram",
                    ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double> or Counter<long> or Counter<int> or Counter<double> => "counter",
                    _ => "gauge",
                };
                s.Append("# HELP ").Append(instrument.Name).Append(' ').Append(instrument.Description ?? instrument.Name).Append('\n');
                s.Append("# TYPE ").Append(instrument.Name).Append(' ').Append(type).Append('\n');
                if (histograms.TryGetValue(instrument, out var series))
                {
                    foreach (var (labels, state) in series)
                    {
                        long cumulative = 0;
                        for (var b = 0; b <= state.Bounds.Length; b++)
                        {
                            cumulative += state.Counts[b];
                            var le = b < state.Bounds.Length ? Number(state.Bounds[b]) : "+Inf";
                            s.Append(Series(instrument.Name + "_bucket", labels, $"le=\"{le}\"")).Append(' ').Append(cumulative).Append('\n');
                        }

                        s.Append(Series(instrument.Name + "_sum", labels)).Append(' ').Append(Number(state.Sum)).Append('\n');
                        s.Append(Series(instrument.Name + "_count", labels)).Append(' ').Append(state.Count).Append('\n');
                    }
                }
                else if (values.TryGetValue(instrument, out var current))
                {
                    foreach (var (labels, value) in current)
                    {
                        s.Append(Series(instrument.Name, labels)).Append(' ').Append(Number(value)).Append('\n');
                    }
                }
            }
        }

        return s.ToString();
    }

    public void Dispose() => listener.Dispose();
}
