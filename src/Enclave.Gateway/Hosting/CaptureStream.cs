using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Gateway.Hosting;

/// <summary>
/// Wraps the response body: keeps a bounded copy for the audit record and, when a content filter
/// is configured, cuts banned phrases. Server-sent events are scanned per event with minimal
/// holdback (an event is released once no banned phrase can still end inside it); a blocked stream
/// ends with a <c>finish_reason: content_filter</c> chunk and <c>[DONE]</c>. Other bodies are held
/// until complete and their message content is withheld when a phrase is found.
/// </summary>
internal sealed class CaptureStream(Stream inner, int limit, ContentFilter? filter) : Stream
{
    private readonly MemoryStream _copy = new();
    private readonly MemoryStream _pending = new();
    private readonly Queue<(byte[] Bytes, long EndOffset)> _held = new();
    private readonly ContentFilter.StreamingScanner? _scanner = filter?.CreateScanner();
    private bool? _isSse;
    private bool _done;

    public string? Blocked { get; private set; }

    public string Text => Encoding.UTF8.GetString(_copy.GetBuffer(), 0, (int)_copy.Length);

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) =>
        WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_copy.Length < limit)
        {
            _copy.Write(buffer.Span[..(int)Math.Min(buffer.Length, limit - _copy.Length)]);
        }

        if (_scanner is null)
        {
            await inner.WriteAsync(buffer, cancellationToken);
            return;
        }

        if (_done)
        {
            return;
        }

        _pending.Write(buffer.Span);
        _isSse ??= _pending.Length >= 5 ? StartsWithData(_pending) : null;
        if (_isSse == true)
        {
            await DrainEventsAsync(cancellationToken);
        }
    }

    private static bool StartsWithData(MemoryStream ms)
    {
        var s = Encoding.ASCII.GetString(ms.GetBuffer(), 0, (int)Math.Min(ms.Length, 16)).TrimStart();
        return s.StartsWith("data:", StringComparison.Ordinal) || s.StartsWith("event:", StringComparison.Ordinal) || s.StartsWith(':');
    }

    private async Task DrainEventsAsync(CancellationToken ct)
    {
        while (!_done)
        {
            var buf = _pending.GetBuffer();
            var len = (int)_pending.Length;
            var sep = buf.AsSpan(0, len).IndexOf("\n\n"u8);
            if (sep < 0)
            {
                break;
            }

            var evt = buf.AsSpan(0, sep + 2).ToArray();
            var rest = buf.AsSpan(sep + 2, len - sep - 2).ToArray();
            _pending.SetLength(0);
            _pending.Write(rest);
            await OnEventAsync(evt, ct);
        }
    }

    private async Task OnEventAsync(byte[] evt, CancellationToken ct)
    {
        var text = Encoding.UTF8.GetString(evt);
        string? content = null;
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith("data:", StringComparison.Ordinal))
            {
                continue;
            }

            var payload = line[5..].Trim();
            if (payload == "[DONE]")
            {
                await ReleaseAsync(long.MaxValue, ct);
                await inner.WriteAsync(evt, ct);
                return;
            }

            content = DeltaContent(payload);
        }

        if (content is not null && _scanner!.Append(content) is { } phrase)
        {
            Blocked = phrase;
            _done = true;
            _held.Clear();
            var stop = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\ndata: [DONE]\n\n";
            await inner.WriteAsync(Encoding.UTF8.GetBytes(stop), ct);
            await inner.FlushAsync(ct);
            return;
        }

        _held.Enqueue((evt, _scanner!.Total));
        await ReleaseAsync(_scanner.SafeLength, ct);
    }

    private async Task ReleaseAsync(long safe, CancellationToken ct)
    {
        var any = false;
        while (_held.Count > 0 && _held.Peek().EndOffset <= safe)
        {
            await inner.WriteAsync(_held.Dequeue().Bytes, ct);
            any = true;
        }

        if (any)
        {
            await inner.FlushAsync(ct);
        }
    }

    private static string? DeltaContent(string json)
    {
        try
        {
            var node = JsonNode.Parse(json);
            var choice = node?["choices"]?[0];
            return choice?["delta"]?["content"]?.GetValue<string>() ?? choice?["text"]?.GetValue<string>();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>Releases whatever is still held once the endpoint has finished writing.</summary>
    public async Task CompleteAsync(CancellationToken ct)
    {
        if (_scanner is null || _done)
        {
            return;
        }

        if (_isSse == true)
        {
            await ReleaseAsync(long.MaxValue, ct);
            if (_pending.Length > 0)
            {
                await inner.WriteAsync(_pending.ToArray(), ct);
            }

            return;
        }

        var body = _pending.ToArray();
        var text = Encoding.UTF8.GetString(body);
        if (filter!.FindIn(text) is { } phrase)
        {
            Blocked = phrase;
            body = Encoding.UTF8.GetBytes(Withhold(text));
        }

        await inner.WriteAsync(body, ct);
    }

    private static string Withhold(string json)
    {
        try
        {
            if (JsonNode.Parse(json) is JsonObject obj && obj["choices"] is JsonArray choices)
            {
                foreach (var c in choices.OfType<JsonObject>())
                {
                    if (c["message"] is JsonObject m)
                    {
                        m["content"] = "";
                    }

                    if (c.ContainsKey("text"))
                    {
                        c["text"] = "";
                    }

                    c["finish_reason"] = "content_filter";
                }

                return obj.ToJsonString();
            }
        }
        catch (JsonException)
        {
        }

        return JsonSerializer.Serialize(new { error = new { message = "The response contained blocked content.", type = "invalid_request_error", param = (string?)null, code = "content_filter" } });
    }
}
