// Drives a running Enclave server with the official openai npm package.
// Usage: node client.mjs BASE_URL MODEL   (BASE_URL like http://127.0.0.1:8000)
// Prints one line per check and exits non-zero on the first failure.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [baseUrl, model] = process.argv.slice(2);
if (!baseUrl || !model) {
  console.error('usage: node client.mjs BASE_URL MODEL');
  process.exit(2);
}

const client = new OpenAI({ baseURL: `${baseUrl.replace(/\/$/, '')}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
const messages = [{ role: 'user', content: 'Tell me about the sea' }];
let passed = 0;

async function check(name, fn) {
  await fn();
  passed++;
  console.log(`ok ${name}`);
}

await check('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
});

let greedy;
await check('chat', async () => {
  greedy = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  assert.equal(greedy.object, 'chat.completion');
  assert.equal(typeof greedy.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(greedy.choices[0].finish_reason));
  const u = greedy.usage;
  assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0 && u.total_tokens === u.prompt_tokens + u.completion_tokens);
});

await check('chat streaming with usage', async () => {
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      finish = c.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, greedy.choices[0].message.content);
  assert.equal(finish, greedy.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, greedy.usage.completion_tokens);
});

await check('chat stop string', async () => {
  const full = (await client.chat.completions.create({ model, messages, max_tokens: 40, temperature: 0, ignore_eos: true })).choices[0].message.content;
  const chars = [...full];
  const at = Math.floor(chars.length / 2);
  const stop = chars.slice(at, at + 2).join('');
  const cut = await client.chat.completions.create({ model, messages, max_tokens: 40, temperature: 0, ignore_eos: true, stop: [stop] });
  assert.equal(cut.choices[0].message.content, full.slice(0, full.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
});

await check('chat n and logprobs', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 5, n: 2, seed: 3, temperature: 1, logprobs: true, top_logprobs: 2, ignore_eos: true });
  assert.equal(r.choices.length, 2);
  assert.equal(r.usage.completion_tokens, 10);
  for (const c of r.choices) {
    assert.equal(c.logprobs.content.length, 5);
    for (const t of c.logprobs.content) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 2);
    }
  }
});

await check('completions', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, logprobs: 2, ignore_eos: true });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].logprobs.tokens.length, 8);
  assert.equal(r.usage.completion_tokens, 8);
  const ids = await client.completions.create({ model, prompt: [[1, 2, 3], [4, 5, 6]], max_tokens: 4, temperature: 0, ignore_eos: true });
  assert.equal(ids.choices.length, 2);
  assert.equal(ids.usage.prompt_tokens, 6);
  const stream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, ignore_eos: true, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

await check('errors', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(client.chat.completions.create({ model, messages, temperature: -3 }), (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), (e) => e.status === 400 && e.param === 'messages');
});

console.log(`node client: all ${passed} checks passed`);
