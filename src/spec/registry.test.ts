import { describe, expect, it } from "vitest";
import { InvalidSettingError, ModelConfigError, UnknownModelError } from "../errors.js";
import { kvLayers } from "./model-spec.js";
import { checkRegistryEntry, closeRegistryIds, findRegistryEntry, listRegistry, registrySpec, type RegistryEntry } from "./registry.js";

function entry(id: string): RegistryEntry {
  const e = findRegistryEntry(id);
  if (e === undefined) throw new Error(`registry lacks ${id}`);
  return e;
}

function meta(id: string, key: string): unknown {
  const e = entry(id);
  const arch = e.metadata["general.architecture"] as string;
  return e.metadata[key.startsWith("general.") ? key : `${arch}.${key}`];
}

describe("registry data", () => {
  const all = listRegistry();

  it("holds at least 40 models with unique lower-case ids and the required fields", () => {
    expect(all.length).toBeGreaterThanOrEqual(40);
    const ids = new Set<string>();
    for (const e of all) {
      expect(ids.has(e.id), e.id).toBe(false);
      ids.add(e.id);
      expect(e.id).toBe(e.id.toLowerCase());
      expect(e.name.length, e.id).toBeGreaterThan(0);
      expect(e.source, e.id).toMatch(/^https:\/\/huggingface\.co\/[\w.-]+\/[\w.-]+$/);
      expect(e.gguf, e.id).toMatch(/^https:\/\/huggingface\.co\/[\w.-]+\/[\w.-]+$/);
      expect(Number.isSafeInteger(e.params) && e.params > 0, e.id).toBe(true);
      expect(typeof e.metadata["general.architecture"], e.id).toBe("string");
      expect(e.weights[e.defaultQuant], e.id).toBeGreaterThan(0);
      expect(["file-size", "params-x-bpw"]).toContain(e.weightsBasis);
    }
  });

  it("has the popular models the CLI documents", () => {
    const wanted = [
      "llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.3-70b", "llama-4-scout",
      "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b", "qwen2.5-coder-7b",
      "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-next-80b-a3b",
      "gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "gemma-3n-e4b",
      "gpt-oss-20b", "gpt-oss-120b", "mistral-7b-v0.3", "mistral-nemo-12b", "mistral-small-24b", "mixtral-8x7b",
      "phi-3.5-mini", "phi-4", "deepseek-v3", "deepseek-r1-distill-qwen-7b", "smollm2-135m", "smollm2-360m", "smollm2-1.7b",
      "command-r-7b", "granite-3.3-8b", "olmo-2-7b", "falcon-mamba-7b", "lfm2-1.2b",
    ];
    for (const id of wanted) expect(findRegistryEntry(id)?.id, id).toBe(id);
  });

  it("estimated weights are params x bpw / 8 for every listed quant", () => {
    for (const e of all) {
      if (e.weightsBasis !== "params-x-bpw") continue;
      expect(e.bpwSource, e.id).toMatch(/^https:\/\//);
      for (const [q, bytes] of Object.entries(e.weights)) {
        const bpw = e.bpw?.[q];
        expect(bpw, `${e.id} ${q}`).toBeTypeOf("number");
        expect(bytes, `${e.id} ${q}`).toBe(Math.round((e.params * bpw!) / 8));
      }
    }
  });

  it("every entry converts to a ModelSpec whose layers agree with its metadata", () => {
    for (const e of all) {
      const spec = registrySpec(e.id);
      const arch = e.metadata["general.architecture"];
      expect(spec.arch, e.id).toBe(arch);
      expect(spec.nLayer, e.id).toBe(e.metadata[`${arch}.block_count`]);
      expect(spec.layers.length, e.id).toBe(spec.nLayer);
      expect(spec.nEmbd, e.id).toBe(e.metadata[`${arch}.embedding_length`]);
      expect(spec.source, e.id).toBe(e.source);
      expect(spec.name, e.id).toBe(e.name);
      expect(spec.params, e.id).toBe(e.params);
      expect(spec.weights, e.id).toEqual({ bytes: e.weights[e.defaultQuant], quant: e.defaultQuant, source: "registry" });
      // every model but a pure SSM keeps some attention KV
      if (arch !== "mamba") expect(kvLayers(spec).length, e.id).toBeGreaterThan(0);
    }
  });
});

describe("registry facts against published configs", () => {
  it("llama-3.2-1b: 16 layers, 8 KV heads of 64", () => {
    // https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct/blob/main/config.json:
    // num_hidden_layers 16, num_key_value_heads 8, head_dim 64, hidden_size 2048, max_position_embeddings 131072
    const s = registrySpec("llama-3.2-1b");
    expect(s.nLayer).toBe(16);
    expect(s.nEmbd).toBe(2048);
    expect(s.nCtxTrain).toBe(131072);
    for (const l of s.layers) expect(l).toMatchObject({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: false });
  });

  it("mistral-small-24b: 40 layers, 8 KV heads of 128", () => {
    // https://huggingface.co/mistralai/Mistral-Small-24B-Instruct-2501/blob/main/config.json:
    // num_hidden_layers 40, num_key_value_heads 8, head_dim 128, hidden_size 5120, intermediate_size 32768
    const s = registrySpec("mistral-small-24b");
    expect(s.nLayer).toBe(40);
    expect(s.nFf).toBe(32768);
    for (const l of s.layers) expect(l).toMatchObject({ kind: "attention", nHeadKv: 8, headDimK: 128, headDimV: 128 });
  });

  it("gpt-oss-20b: 24 layers, 8 KV heads of 64, window 128 on alternate layers, 32 experts / 4 used", () => {
    // llama.cpp load log of the published GGUF (https://github.com/ggml-org/llama.cpp/issues/15789):
    // gpt-oss.context_length 131072, embedding_length 2880, feed_forward_length 2880, head_count 64,
    // head_count_kv 8, expert_count 32, expert_used_count 4, key_length 64.
    // https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json: num_hidden_layers 24,
    // sliding_window 128, layer_types starting "sliding_attention", "full_attention", ...
    const s = registrySpec("gpt-oss-20b");
    expect(s.nLayer).toBe(24);
    expect(s.nEmbd).toBe(2880);
    expect(s.nHead).toBe(64);
    expect(s.nCtxTrain).toBe(131072);
    expect(s.nSwa).toBe(128);
    expect(s.experts).toEqual({ count: 32, used: 4 });
    for (let il = 0; il < 24; il++) {
      expect(s.layers[il]).toMatchObject({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: il % 2 === 0 });
    }
    expect(s.weights?.quant).toBe("MXFP4");
  });

  it("gemma-3-27b: 62 layers, 16 KV heads of 128, window 1024, 5 local : 1 global", () => {
    // https://huggingface.co/google/gemma-3-27b-it/blob/main/config.json (text_config): num_hidden_layers 62,
    // num_key_value_heads 16, head_dim 128, sliding_window 1024, sliding_window_pattern 6.
    // Global layers are 5, 11, ..., 59: floor(62 / 6) = 10 of them, so 52 sliding layers.
    const s = registrySpec("gemma-3-27b");
    expect(s.nLayer).toBe(62);
    expect(s.nSwa).toBe(1024);
    let swa = 0;
    for (let il = 0; il < 62; il++) {
      const l = s.layers[il]!;
      expect(l).toMatchObject({ kind: "attention", nHeadKv: 16, headDimK: 128, headDimV: 128, swa: il % 6 !== 5 });
      if (l.kind === "attention" && l.swa) swa++;
    }
    expect(swa).toBe(52);
  });

  it("deepseek-v3: MLA latent 512 + rope 64 on 61 layers, 256 experts / 8 used", () => {
    // https://huggingface.co/deepseek-ai/DeepSeek-V3-0324/blob/main/config.json: num_hidden_layers 61,
    // kv_lora_rank 512, qk_rope_head_dim 64, n_routed_experts 256, num_experts_per_tok 8
    const s = registrySpec("deepseek-v3");
    expect(s.nLayer).toBe(61);
    expect(s.mla).toEqual({ kvLoraRank: 512, ropeDim: 64 });
    expect(s.experts).toEqual({ count: 256, used: 8 });
    expect(s.layers[0]).toMatchObject({ kind: "attention", nHeadKv: 1, headDimK: 576, headDimV: 512 });
  });

  it("hybrids: qwen3-next keeps KV on every 4th layer, lfm2 on 6 of 16, falcon-mamba on none", () => {
    // https://huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct/blob/main/config.json: 48 layers, full_attention_interval 4,
    // num_key_value_heads 2, head_dim 256
    const next = registrySpec("qwen3-next-80b-a3b");
    const nextKv = kvLayers(next).map((l) => l.index);
    expect(nextKv).toEqual([3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]);
    expect(kvLayers(next)[0]!.layer).toMatchObject({ nHeadKv: 2, headDimK: 256 });
    // https://huggingface.co/LiquidAI/LFM2-1.2B/blob/main/config.json: layer_types has full_attention at 2, 5, 8, 10, 12, 14
    expect(kvLayers(registrySpec("lfm2-1.2b")).map((l) => l.index)).toEqual([2, 5, 8, 10, 12, 14]);
    const mamba = registrySpec("falcon-mamba-7b");
    expect(kvLayers(mamba)).toEqual([]);
    expect(mamba.layers.every((l) => l.kind === "recurrent")).toBe(true);
  });

  it("llama-3.1-8b weight estimates match the sizes llama.cpp publishes for it", () => {
    // llama.cpp tools/quantize/README.md, meta-llama/Llama-3.1-8B table: Q4_K_M 4.58 GiB, Q8_0 7.95 GiB, F16 14.96 GiB
    const gib = 2 ** 30;
    const w = entry("llama-3.1-8b").weights;
    expect(w.Q4_K_M! / gib).toBeCloseTo(4.58, 2);
    expect(w.Q8_0! / gib).toBeCloseTo(7.95, 2);
    expect(w.F16! / gib).toBeCloseTo(14.96, 2);
  });

  it("parameter counts agree with a hand count from the dims", () => {
    // Llama/Mistral/Qwen2 blocks: q, k, v, o projections + gate/up/down MLP + 2 RMSNorm weights;
    // embeddings once when tied, twice otherwise; one final norm. Qwen2 adds q/k/v biases.
    const dense = (id: string, tied: boolean, qkvBias: boolean): number => {
      const nL = meta(id, "block_count") as number;
      const d = meta(id, "embedding_length") as number;
      const h = meta(id, "attention.head_count") as number;
      const kv = meta(id, "attention.head_count_kv") as number;
      const hd = meta(id, "attention.key_length") as number;
      const ff = meta(id, "feed_forward_length") as number;
      const vocab = meta(id, "vocab_size") as number;
      const attn = 2 * d * h * hd + 2 * d * kv * hd + (qkvBias ? h * hd + 2 * kv * hd : 0);
      return nL * (attn + 3 * d * ff + 2 * d) + vocab * d * (tied ? 1 : 2) + d;
    };
    // 1,235,814,400 / 8,030,261,248 / 23,572,403,200 / 7,615,616,512 are the safetensors totals
    // shown on the Hugging Face model pages of these repos.
    expect(dense("llama-3.2-1b", true, false)).toBe(1235814400);
    expect(dense("llama-3.1-8b", false, false)).toBe(8030261248);
    expect(dense("mistral-small-24b", false, false)).toBe(23572403200);
    expect(dense("qwen2.5-7b", false, true)).toBe(7615616512);
    for (const id of ["llama-3.2-1b", "llama-3.1-8b", "mistral-small-24b", "qwen2.5-7b"]) {
      expect(entry(id).params, id).toBe(id === "llama-3.2-1b" ? 1235814400 : id === "llama-3.1-8b" ? 8030261248 : id === "mistral-small-24b" ? 23572403200 : 7615616512);
    }
  });
});

describe("lookup", () => {
  it("is tolerant of case, owner prefixes, URLs and variant suffixes", () => {
    expect(findRegistryEntry("Llama-3.1-8B")?.id).toBe("llama-3.1-8b");
    expect(findRegistryEntry("meta-llama/Llama-3.1-8B-Instruct")?.id).toBe("llama-3.1-8b");
    expect(findRegistryEntry("https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF")?.id).toBe("llama-3.1-8b");
    expect(findRegistryEntry("google/gemma-3-27b-it")?.id).toBe("gemma-3-27b");
    expect(findRegistryEntry("  GPT-OSS-20B ")?.id).toBe("gpt-oss-20b");
    expect(findRegistryEntry("Qwen3_8B")?.id).toBe("qwen3-8b");
    expect(findRegistryEntry("mistralai/Mistral-7B-Instruct-v0.3")?.id).toBe("mistral-7b-v0.3");
    expect(findRegistryEntry("no-such-model")).toBeUndefined();
    expect(findRegistryEntry("")).toBeUndefined();
  });

  it("an unknown id is an UnknownModelError naming close ids", () => {
    let err: unknown;
    try {
      registrySpec("qwen3-9b");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnknownModelError);
    const u = err as UnknownModelError;
    expect(u.details.model).toBe("qwen3-9b");
    expect(u.details.suggestions).toContain("qwen3-8b");
    expect(u.message).toContain("qwen3-8b");
    expect(closeRegistryIds("lama-3.1-8b")).toContain("llama-3.1-8b");
    expect(closeRegistryIds("gemma3-27b")[0]).toBe("gemma-3-27b");
    expect(closeRegistryIds("zzzzzzzzzzzzzzzz")).toEqual([]);
  });

  it("takes the quant case-insensitively and rejects one the entry lacks", () => {
    const s = registrySpec("llama-3.1-8b", "q8_0");
    expect(s.weights).toEqual({ bytes: entry("llama-3.1-8b").weights.Q8_0, quant: "Q8_0", source: "registry" });
    expect(() => registrySpec("llama-3.1-8b", "Q3_XYZ")).toThrow(InvalidSettingError);
    expect(() => registrySpec("gpt-oss-20b", "Q4_K_M")).toThrow(/MXFP4/);
  });

  it("entries are frozen", () => {
    const e = entry("llama-3.1-8b");
    expect(Object.isFrozen(e)).toBe(true);
    expect(Object.isFrozen(e.metadata)).toBe(true);
    expect(Object.isFrozen(e.weights)).toBe(true);
  });
});

describe("checkRegistryEntry", () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(entry("llama-3.2-1b"))) as Record<string, unknown>;

  it("accepts a real entry and names the field of a broken one", () => {
    expect(checkRegistryEntry(good(), 0).id).toBe("llama-3.2-1b");
    const cases: Array<[string, (e: Record<string, unknown>) => void]> = [
      ["source", (e) => (e.source = "http://example.com/x")],
      ["params", (e) => (e.params = 1.5)],
      ["defaultQuant", (e) => (e.defaultQuant = "Q2_K")],
      ["bpw.Q8_0", (e) => delete (e.bpw as Record<string, unknown>).Q8_0],
      ["weightsBasis", (e) => (e.weightsBasis = "guess")],
      ["metadata", (e) => (e.metadata = {})],
      ["id", (e) => (e.id = "Llama")],
    ];
    for (const [field, mutate] of cases) {
      const e = good();
      mutate(e);
      let err: unknown;
      try {
        checkRegistryEntry(e, 3);
      } catch (x) {
        err = x;
      }
      expect(err, field).toBeInstanceOf(ModelConfigError);
      expect((err as ModelConfigError).details.field as string, field).toContain(field);
    }
    expect(() => checkRegistryEntry(null, 7)).toThrow(/#7/);
  });
});
