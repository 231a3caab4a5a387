// Greedy tokens of llama.cpp for a GGUF file and a list of prompt token ids, through the prebuilt CPU binaries of
// the npm package node-llama-cpp: a cross-check that a file written by `enclave quantize` means the same model to
// llama.cpp (compare with `enclave run --model FILE.gguf --raw --prompt TEXT --temperature 0 --json`).
//   npm install --prefix /tmp/nlc node-llama-cpp@3
//   NLC=/tmp/nlc/node_modules/node-llama-cpp node tools/bench/llama-cpp-greedy.mjs FILE.gguf '[358,497,504]' 12
import { pathToFileURL } from "node:url";
import path from "node:path";

const packageDir = process.env.NLC ?? "node-llama-cpp";
const entry = packageDir.startsWith("/") ? pathToFileURL(path.join(packageDir, "dist", "index.js")).href : packageDir;
const { getLlama } = await import(entry);
const [file, ids, count = "12"] = process.argv.slice(2);
if (!file || !ids) {
  console.error("usage: llama-cpp-greedy.mjs FILE.gguf '[id, id, ...]' [tokens]");
  process.exit(2);
}

const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
const sequence = context.getSequence();
const produced = [];
for await (const token of sequence.evaluate(JSON.parse(ids), { temperature: 0 })) {
  produced.push(token);
  if (produced.length >= Number(count)) break;
}

console.log(JSON.stringify(produced));
await context.dispose();
await model.dispose();
