using System.Text;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>Malformed requests each get the right 4xx with a message that says what is wrong, and never a 500.</summary>
[Collection(SharedServerCollection.Name)]
public sealed class BadInputTests(SharedServer shared)
{
    private const string Msg = """[{"role":"user","content":"hi"}]""";

    public static TheoryData<string, string, int, string?, string> Cases() => new()
    {
        // path, body, status, param, a word the message must contain
        { "v1/chat/completions", "{", 400, null, "JSON" },
        { "v1/chat/completions", "", 400, null, "empty" },
        { "v1/chat/completions", "[1,2]", 400, null, "object" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\"}", 400, "messages", "required" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":[]}", 400, "messages", "at least one" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":\"hi\"}", 400, "messages", "array" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", "role" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role", "role" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content", "string" },
        { "v1/chat/completions", "{\"model\":\"tiny-qwen3\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400, "messages[0].content[0].type", "not supported" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"temperature\":\"hot\"}}", 400, "temperature", "number" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"temperature\":-0.5}}", 400, "temperature", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"top_p\":0}}", 400, "top_p", "top_p" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":-1}}", 400, "max_tokens", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":1e40}}", 400, "max_tokens", "integer" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":99999999999999999999999}}", 400, "max_tokens", "integer" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":2.5}}", 400, "max_tokens", "integer" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":100000}}", 400, null, "context length" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"n\":0}}", 400, "n", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"stream\":\"yes\"}}", 400, "stream", "boolean" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"stop\":7}}", 400, "stop", "string" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"stop\":[\"\"]}}", 400, "stop", "non-empty" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"top_logprobs\":3}}", 400, "top_logprobs", "logprobs" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"logprobs\":true,\"top_logprobs\":50}}", 400, "top_logprobs", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"frequency_penalty\":3}}", 400, "frequency_penalty", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"top_k\":-5}}", 400, "top_k", "between" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"min_tokens\":10,\"max_tokens\":5}}", 400, "min_tokens", "max_tokens" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"seed\":\"x\"}}", 400, "seed", "integer" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"stream_options\":{{\"include_usage\":1}}}}", 400, "stream_options.include_usage", "boolean" },
        { "v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"chat_template_kwargs\":[]}}", 400, "chat_template_kwargs", "object" },
        { "v1/chat/completions", $"{{\"model\":\"no-such\",\"messages\":{Msg}}}", 404, "model", "does not exist" },
        { "v1/chat/completions", $"{{\"model\":7,\"messages\":{Msg}}}", 400, "model", "string" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\"}", 400, "prompt", "required" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":[]}", 400, "prompt", "empty" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":[1,\"a\"]}", 400, "prompt", "token ids" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":[1,5000000]}", 400, "prompt", "between" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":[-3]}", 400, "prompt", "between" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":{}}", 400, "prompt", "string" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":\"x\",\"logprobs\":99}", 400, "logprobs", "between" },
        { "v1/completions", "{\"model\":\"tiny-qwen3\",\"prompt\":\"x\",\"echo\":true}", 400, "echo", "not supported" },
        { "v1/embeddings", "{\"model\":\"tiny-qwen3\",\"input\":\"x\"}", 400, "model", "embeddings" },
        { "tokenize", "{\"model\":\"tiny-qwen3\"}", 400, "prompt", "required" },
        { "detokenize", "{\"model\":\"tiny-qwen3\",\"tokens\":[1,99999]}", 400, "tokens", "between" },
        { "detokenize", "{\"model\":\"tiny-qwen3\",\"tokens\":\"abc\"}", 400, "tokens", "array" },
        { "v1/nothing-here", "{}", 404, null, "no route" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task MalformedRequestsGetAClear4xx(string path, string body, int status, string? param, string word)
    {
        var (actual, json, _) = await shared.Server.PostAsync(path, body);
        Assert.True(actual == status, $"expected {status}, got {actual}: {json?.ToJsonString()}");
        var error = json!["error"]!;
        Assert.Equal(param, error["param"]?.GetValue<string>());
        Assert.Contains(word, error["message"]!.GetValue<string>(), StringComparison.OrdinalIgnoreCase);
        Assert.False(string.IsNullOrEmpty(error["type"]?.GetValue<string>()));
    }

    [Fact]
    public async Task InvalidUtf8IsA400AndTheServerKeepsServing()
    {
        var bytes = Encoding.UTF8.GetBytes("{\"model\":\"tiny-qwen3\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}").ToList();
        bytes.InsertRange(bytes.IndexOf((byte)'a'), [0xC3, 0x28, 0xFF]);
        using var content = new ByteArrayContent([.. bytes]);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        var response = await shared.Server.Http.PostAsync("v1/chat/completions", content);
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("\"error\"", await response.Content.ReadAsStringAsync());
        var (ok, _, _) = await shared.Server.PostAsync("v1/chat/completions", $"{{\"model\":\"tiny-qwen3\",\"messages\":{Msg},\"max_tokens\":2}}");
        Assert.Equal(200, ok);
    }
}
