// Named bounds on what a GGUF header may claim. A GGUF file is hostile input: every count, length
// and size in its header is checked against one of these before it drives a loop or an allocation.
// Each value leaves room for the largest real models and stays below @huggingface/gguf's own
// caps (node_modules/@huggingface/gguf/src/gguf.ts), so that reader, the reference header.test.ts
// holds our decoder to, accepts every file ours passed.

/**
 * Tensor infos per file. DeepSeek-V3/R1 GGUF shards hold about 1.1k tensors, a whole unsharded
 * DeepSeek-V3 about 1.03k (experts are merged per layer); even unmerged experts (61 layers x 256
 * experts x 3) stay below 48k. 65,536 covers that and bounds the tensor loop.
 */
export const MAX_TENSOR_COUNT = 65_536;

/** Metadata key/value pairs per file. Real files carry 20-60 (tokenizer arrays count as one each). */
export const MAX_KV_COUNT = 16_384;

/**
 * Bytes of one metadata string. The longest real strings are chat templates (tens of KB) and, in
 * a few conversions, an embedded tokenizer JSON (a few MB). Below the library's 10,000,000 cap.
 */
export const MAX_STRING_BYTES = 8 * 1024 * 1024;

/** Bytes of a metadata key. The GGUF spec caps keys at 2^16 - 1 bytes (ggml/docs/gguf.md). */
export const MAX_KEY_BYTES = 65_535;

/**
 * Bytes of a tensor name: ggml stores names in `char name[GGML_MAX_NAME]` with GGML_MAX_NAME = 64
 * (ggml/include/ggml.h), and llama.cpp's gguf reader refuses names of 64 bytes or more.
 */
export const MAX_TENSOR_NAME_BYTES = 63;

/**
 * Elements of one metadata array. The largest are tokenizer arrays: 262,144 tokens in Gemma-3,
 * 202,048 in Llama-4, ~150k merges in Qwen-2.5. 1,000,000 is ~4x the largest and equals the
 * library's cap.
 */
export const MAX_ARRAY_LENGTH = 1_000_000;

/** Nesting of arrays inside arrays. No real file nests at all; the library allows depth 4. */
export const MAX_ARRAY_DEPTH = 2;

/** Dimensions per tensor: GGML_MAX_DIMS = 4 (ggml/include/ggml.h). */
export const MAX_DIMS = 4;

/**
 * Elements of one tensor. The largest real tensors are merged MoE experts: Kimi-K2's
 * ffn_*_exps are 7168 x 2048 x 384 = 5.6e9 elements. 2^40 (1.1e12) is 200x that, and keeps
 * every product of dims an exact integer in a double.
 */
export const MAX_TENSOR_ELEMENTS = 2 ** 40;

/**
 * Bytes of tensor data one file may describe (offset + size of its last tensor). The largest
 * single GGUF files are unsharded 1T-parameter models at 8 bits (~1 TB; Llama-4 Behemoth class
 * shards are far smaller). 16 TiB, well inside 2^53, so all offsets stay exact numbers.
 */
export const MAX_FILE_BYTES = 2 ** 44;

/**
 * Bytes of the whole header (magic .. end of tensor infos). Headers of 256k-vocab models are
 * 5-15 MB (tokens + scores + types + merges). 32 MiB leaves room and stays below the 50 MB
 * buffer @huggingface/gguf's RangeView can grow to (minus one 2 MB chunk of its slack).
 */
export const MAX_HEADER_BYTES = 32 * 1024 * 1024;

/** First read of a header: enough for small models' whole header, 5% of stories260K. */
export const HEADER_INITIAL_READ_BYTES = 64 * 1024;

/** Each further read doubles what is buffered, up to this much per request. */
export const HEADER_MAX_READ_BYTES = 8 * 1024 * 1024;

/**
 * general.alignment: a power of two (llama.cpp's gguf reader requires it), at most 1 MiB. Real
 * files use 32 (the default, GGUF_DEFAULT_ALIGNMENT) or 64; the upper bound caps the padding
 * a hostile file can make us skip.
 */
export const MIN_ALIGNMENT = 1;
export const MAX_ALIGNMENT = 1024 * 1024;

/** general.alignment when the key is absent (GGUF_DEFAULT_ALIGNMENT in ggml/include/gguf.h). */
export const DEFAULT_ALIGNMENT = 32;

/**
 * Bytes an HTTP reader may discard to reach `offset` when a server ignores Range and sends the
 * whole file from byte 0. Enough to read any header (MAX_HEADER_BYTES) that way; beyond it the
 * reader refuses instead of silently streaming gigabytes of tensor data.
 */
export const MAX_RANGE_IGNORED_SKIP_BYTES = MAX_HEADER_BYTES;
