// Times llama.cpp on a GGUF file the way `enclave bench` does (prefill of N random tokens, then M greedy decode
// steps), through the prebuilt CPU binaries of the npm package node-llama-cpp (llama.cpp cannot be built here).
//   npm install --prefix /tmp/nlc node-llama-cpp@3
//   NLC=/tmp/nlc/node_modules/node-llama-cpp node tools/bench/llama-cpp-bench.mjs FILE.gguf 128 64 2
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import fs from "node:fs";
import path from "node:path";

const packageDir = process.env.NLC ?? "node-llama-cpp";
const entry = packageDir.startsWith("/") ? pathToFileURL(path.join(packageDir, "dist", "index.js")).href : packageDir;
const { getLlama } = await import(entry);
const [file, promptLen = "128", genLen = "64", threads = "2"] = process.argv.slice(2);
if (!file) {
  console.error("usage: llama-cpp-bench.mjs FILE.gguf [prompt-len] [gen-len] [threads]");
  process.exit(2);
}

const p = Number(promptLen), g = Number(genLen), t = Number(threads);
const llama = await getLlama({ gpu: false, build: "never" });
const loadStart = performance.now();
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: true });
const context = await model.createContext({ contextSize: p + g + 16, batchSize: Math.max(512, p), threads: t });
const loadSeconds = (performance.now() - loadStart) / 1000;

// Random token ids below 256 exist in every vocabulary, including the placeholder one of random-weight files.
let seed = 1234;
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const prompt = Array.from({ length: p }, () => 1 + Math.floor(random() * 250));

// Warm-up (page-in of mapped weights), then forget it.
const sequence = context.getSequence();
await sequence.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 16));
await sequence.clearHistory();

const prefillStart = performance.now();
await sequence.evaluateWithoutGeneratingNewTokens(prompt);
const prefillSeconds = (performance.now() - prefillStart) / 1000;

let produced = 0;
const decodeStart = performance.now();
for await (const token of sequence.evaluate([prompt[p - 1]], { temperature: 0 })) {
  if (++produced >= g) break;
}
const decodeSeconds = (performance.now() - decodeStart) / 1000;
const rssMiB = process.memoryUsage().rss / 1048576;
const status = fs.readFileSync("/proc/self/status", "utf8");
const peakMiB = Number((status.match(/VmHWM:\s+(\d+)/) || [0, 0])[1]) / 1024;

console.log(`llama.cpp    node-llama-cpp ${llama.buildType ?? ""} ${llama.gpu === false ? "cpu" : llama.gpu}, ${t} threads`);
console.log(`file         ${file} (${(fs.statSync(file).size / 1048576).toFixed(0)} MiB), loaded in ${loadSeconds.toFixed(2)} s`);
console.log(`prefill      ${(p / prefillSeconds).toFixed(1)} tokens/s (${(prefillSeconds * 1000).toFixed(0)} ms for ${p} tokens)`);
console.log(`decode       ${(produced / decodeSeconds).toFixed(2)} tokens/s (${produced} tokens)`);
console.log(`memory       ${peakMiB.toFixed(0)} MiB peak resident, ${rssMiB.toFixed(0)} MiB now`);
await context.dispose();
await model.dispose();
