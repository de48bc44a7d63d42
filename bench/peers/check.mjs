// Proves the prebuilt llama.cpp binary loads: CPU only, no build, no download. (A file, not
// `node -e`: node-llama-cpp forks a test process, and fork() would inherit `-e`.)
import { getLlama } from "node-llama-cpp";

const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, maxThreads: 1, logLevel: "error" });
console.log(`node-llama-cpp ok: llama.cpp ${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release} (${llama.buildType}), gpu ${llama.gpu}`);
console.log(llama.systemInfo.trim());
await llama.dispose();
