// The ggml tensor types: id (as stored in GGUF tensor infos), values per block and bytes per
// block, from ggml/src/ggml-common.h (block_* structs, each with a static_assert on its size)
// and ggml/src/ggml.c (type_traits). Used for weight bytes and for K/V cache row sizes.

export interface GgmlType {
  readonly id: number;
  readonly name: string;
  /** Values per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

// Removed ids (4, 5: Q4_2/Q4_3; 31-33, 36-38: repacked variants) are absent on purpose: a file
// that uses them cannot be loaded by current llama.cpp either.
const TYPES: readonly GgmlType[] = [
  { id: 0, name: "F32", blockSize: 1, typeSize: 4 },
  { id: 1, name: "F16", blockSize: 1, typeSize: 2 },
  { id: 2, name: "Q4_0", blockSize: 32, typeSize: 18 }, // f16 d + 16 B of nibbles
  { id: 3, name: "Q4_1", blockSize: 32, typeSize: 20 }, // f16 d, m + 16 B
  { id: 6, name: "Q5_0", blockSize: 32, typeSize: 22 }, // f16 d + 4 B high bits + 16 B
  { id: 7, name: "Q5_1", blockSize: 32, typeSize: 24 }, // f16 d, m + 4 B + 16 B
  { id: 8, name: "Q8_0", blockSize: 32, typeSize: 34 }, // f16 d + 32 int8
  { id: 9, name: "Q8_1", blockSize: 32, typeSize: 36 }, // f16 d, s + 32 int8
  { id: 10, name: "Q2_K", blockSize: 256, typeSize: 84 },
  { id: 11, name: "Q3_K", blockSize: 256, typeSize: 110 },
  { id: 12, name: "Q4_K", blockSize: 256, typeSize: 144 },
  { id: 13, name: "Q5_K", blockSize: 256, typeSize: 176 },
  { id: 14, name: "Q6_K", blockSize: 256, typeSize: 210 },
  { id: 15, name: "Q8_K", blockSize: 256, typeSize: 292 },
  { id: 16, name: "IQ2_XXS", blockSize: 256, typeSize: 66 },
  { id: 17, name: "IQ2_XS", blockSize: 256, typeSize: 74 },
  { id: 18, name: "IQ3_XXS", blockSize: 256, typeSize: 98 },
  { id: 19, name: "IQ1_S", blockSize: 256, typeSize: 50 },
  { id: 20, name: "IQ4_NL", blockSize: 32, typeSize: 18 },
  { id: 21, name: "IQ3_S", blockSize: 256, typeSize: 110 },
  { id: 22, name: "IQ2_S", blockSize: 256, typeSize: 82 },
  { id: 23, name: "IQ4_XS", blockSize: 256, typeSize: 136 },
  { id: 24, name: "I8", blockSize: 1, typeSize: 1 },
  { id: 25, name: "I16", blockSize: 1, typeSize: 2 },
  { id: 26, name: "I32", blockSize: 1, typeSize: 4 },
  { id: 27, name: "I64", blockSize: 1, typeSize: 8 },
  { id: 28, name: "F64", blockSize: 1, typeSize: 8 },
  { id: 29, name: "IQ1_M", blockSize: 256, typeSize: 56 },
  { id: 30, name: "BF16", blockSize: 1, typeSize: 2 },
  { id: 34, name: "TQ1_0", blockSize: 256, typeSize: 54 },
  { id: 35, name: "TQ2_0", blockSize: 256, typeSize: 66 },
  { id: 39, name: "MXFP4", blockSize: 32, typeSize: 17 }, // e8m0 scale + 16 B of fp4 pairs
];

const BY_ID = new Map<number, GgmlType>(TYPES.map((t) => [t.id, t]));
const BY_NAME = new Map<string, GgmlType>(TYPES.map((t) => [t.name.toLowerCase(), t]));

export const GGML_TYPES: readonly GgmlType[] = TYPES;

export function ggmlTypeById(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** Case-insensitive: "q8_0", "Q8_0", "f16". */
export function ggmlTypeByName(name: string): GgmlType | undefined {
  return BY_NAME.get(name.toLowerCase());
}

/**
 * Bytes of `nValues` values of `type` (ggml_row_size): `typeSize * nValues / blockSize`.
 * Returns null when `nValues` is not a whole number of blocks (ggml asserts on that).
 */
export function ggmlRowBytes(type: GgmlType, nValues: number): number | null {
  if (nValues % type.blockSize !== 0) return null;
  return (type.typeSize * nValues) / type.blockSize;
}
