// A synthetic GGUF that llama.cpp will load: test/fixtures/synthetic-model.ts writes shapes and
// weights but no tokenizer, and llama.cpp refuses a file without `tokenizer.ggml.model`
// (src/llama-vocab.cpp, llama_vocab::impl::load). Benchmarks feed token ids directly, so any
// vocabulary of the right size does: a SentencePiece ("llama") table of byte tokens and fillers.
//
// The KVs are spliced in right after the fixed 24-byte GGUF prefix instead of re-writing the
// file: the parsed metadata no longer knows each value's GGUF type (u32 vs f32), which llama.cpp
// checks. Tensor offsets are relative to the data section, so the file stays valid as long as the
// inserted bytes are a multiple of the alignment (a padding string makes them so).

import { readGgufHeader } from "../../src/gguf/header.js";
import { spmVocab } from "../../test/fixtures/arch-models.js";
import { ByteWriter, GGUF_VALUE_TYPE, type GgufWriterValue } from "../../test/fixtures/gguf-writer.js";

/** magic(4) + version(u32) + n_tensors(u64) + n_kv(u64) (ggml/docs/gguf.md). */
const PREFIX_BYTES = 24;
const N_KV_OFFSET = 16;

/** SentencePiece vocabulary metadata with `nVocab` tokens: <unk> <s> </s>, 256 byte tokens, fillers. */
export function spmVocabMetadata(nVocab: number): Array<[string, GgufWriterValue]> {
  return spmVocab(nVocab, []);
}

/** `gguf` with `extra` metadata inserted before its own; checks the tensor table survived. */
export async function withExtraMetadata(gguf: Uint8Array, extra: Array<[string, GgufWriterValue]>): Promise<Uint8Array> {
  const before = await readGgufHeader(gguf);
  const w = new ByteWriter();
  for (const [key, value] of extra) {
    w.str(key);
    w.u32(GGUF_VALUE_TYPE[value.type]);
    w.value(value);
  }
  // Padding KV: key string (u64 length + bytes) + type u32 + value string (u64 length + bytes).
  const padKey = "kvbound.bench.padding";
  const fixed = w.length + 8 + padKey.length + 4 + 8;
  const padLen = (before.alignment - (fixed % before.alignment)) % before.alignment;
  w.str(padKey);
  w.u32(GGUF_VALUE_TYPE.string);
  w.str(" ".repeat(padLen));
  const inserted = w.finish();
  if (inserted.length % before.alignment !== 0) throw new Error("padding arithmetic is wrong");

  const out = new Uint8Array(gguf.length + inserted.length);
  out.set(gguf.subarray(0, PREFIX_BYTES), 0);
  out.set(inserted, PREFIX_BYTES);
  out.set(gguf.subarray(PREFIX_BYTES), PREFIX_BYTES + inserted.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(N_KV_OFFSET, view.getBigUint64(N_KV_OFFSET, true) + BigInt(extra.length + 1), true);

  const after = await readGgufHeader(out);
  if (after.dataOffset !== before.dataOffset + inserted.length || after.tensors.length !== before.tensors.length) {
    throw new Error("spliced GGUF does not keep the tensor table");
  }
  for (let i = 0; i < before.tensors.length; i++) {
    if (after.tensors[i]!.offset !== before.tensors[i]!.offset || after.tensors[i]!.name !== before.tensors[i]!.name) {
      throw new Error(`spliced GGUF moved tensor ${before.tensors[i]!.name}`);
    }
  }
  return out;
}
