// GGUF `tokenizer.ggml.token_type` values (llama.cpp include/llama.h, enum llama_token_type), shared
// by every tokenizer so none has to import another to name them.

export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;
