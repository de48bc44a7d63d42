// kvbound's Node-only API: reading models from local paths. Everything in "kvbound" works here too.

export { loadModelSpec } from "./spec/load.js";
export { fileSource } from "./gguf/readers/fs.js";
