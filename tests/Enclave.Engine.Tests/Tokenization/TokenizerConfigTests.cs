using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

public sealed class TokenizerConfigTests
{
    [Fact]
    public void Missing_file_gives_defaults()
    {
        using var dir = new TempDirectory();
        var c = TokenizerConfig.Load(dir.Path);
        Assert.Null(c.BosToken);
        Assert.Null(c.AddBosToken);
        Assert.Null(c.ChatTemplate);
        Assert.False(c.CleanUpTokenizationSpaces);
        Assert.True(c.SpecialTokensMap.ContainsKey("bos_token"));
        Assert.Null(c.SpecialTokensMap["bos_token"]);
    }

    [Fact]
    public void Tokens_may_be_strings_or_added_token_objects()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer_config.json", """
            {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "</s>",
             "pad_token": null, "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false,
             "clean_up_tokenization_spaces": true, "chat_template": "{{ messages }}"}
            """);
        var c = TokenizerConfig.Load(dir.Path);
        Assert.Equal("<s>", c.BosToken);
        Assert.Equal("</s>", c.EosToken);
        Assert.Null(c.PadToken);
        Assert.Equal("<unk>", c.UnkToken);
        Assert.True(c.AddBosToken);
        Assert.False(c.AddEosToken);
        Assert.True(c.CleanUpTokenizationSpaces);
        Assert.Equal("{{ messages }}", c.ChatTemplate);
        Assert.Equal("<s>", c.SpecialTokensMap["bos_token"]);
        Assert.Equal("</s>", c.SpecialTokensMap["eos_token"]);
        Assert.Equal("<unk>", c.SpecialTokensMap["unk_token"]);
    }

    [Fact]
    public void Named_template_list_uses_the_default_entry()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer_config.json", """
            {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
            """);
        Assert.Equal("D", TokenizerConfig.Load(dir.Path).ChatTemplate);
    }

    [Fact]
    public void Jinja_file_supplies_the_template_when_the_config_has_none()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer_config.json", """{"eos_token": "</s>"}""");
        dir.Write("chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}");
        Assert.Equal("{% for m in messages %}{{ m.content }}{% endfor %}", TokenizerConfig.Load(dir.Path).ChatTemplate);
    }

    [Fact]
    public void Real_configs_expose_their_templates_and_tokens()
    {
        var qwen = TokenizerConfig.Load(TokenizerFixtures.TokenizerDirectory("qwen3"));
        Assert.Equal("<|im_end|>", qwen.EosToken);
        Assert.Null(qwen.BosToken);
        Assert.False(qwen.AddBosToken);
        Assert.Contains("<|im_start|>", qwen.ChatTemplate);

        var deepseek = TokenizerConfig.Load(TokenizerFixtures.TokenizerDirectory("deepseek_v3"));
        Assert.Equal("<\uff5cbegin\u2581of\u2581sentence\uff5c>", deepseek.BosToken);
        Assert.True(deepseek.AddBosToken);
    }
}
