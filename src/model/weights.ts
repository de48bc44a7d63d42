// Weight tensors as views into the loaded GGUF bytes (never a second copy of the file), checked
// against the header: a tensor of the wrong size, an unsupported type or a missing tensor is a
// typed error that names it.

import type { GgufHeader, GgufTensorInfo } from "../gguf/header.js";
import { ModelConfigError, TensorShapeError, UnsupportedTensorTypeError } from "../errors.js";
import { WEIGHT_TYPES, type WeightTypeName } from "./kernels/quant-rows.js";
import type { WeightMatrix } from "./kernels/matvec.js";

export class WeightSet {
  private readonly byName = new Map<string, GgufTensorInfo>();

  /** `data` holds the tensor data region: byte 0 is the header's `dataOffset` in the file. */
  constructor(readonly header: GgufHeader, readonly data: Uint8Array) {
    for (const t of header.tensors) this.byName.set(t.name, t);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** A 1-D or 2-D tensor as a matrix of `rows` x `cols` (ne0 = cols), checked against the expected shape. */
  matrix(name: string, cols: number, rows: number): WeightMatrix {
    const t = this.byName.get(name);
    if (!t) throw new ModelConfigError(`tensor ${name} is missing from the GGUF file`, { field: name });
    const type = t.type.name as WeightTypeName;
    if (!WEIGHT_TYPES.includes(type)) throw new UnsupportedTensorTypeError(name, t.type.name);
    const ne0 = t.shape[0] ?? 1;
    let ne1 = 1;
    for (let i = 1; i < t.shape.length; i++) ne1 *= t.shape[i]!;
    if (ne0 !== cols || ne1 !== rows) {
      throw new TensorShapeError(
        `tensor ${name} has shape [${t.shape.join(", ")}] but the model's metadata needs [${cols}, ${rows}]`,
        { tensor: name, shape: t.shape, expected: [cols, rows] },
      );
    }
    const rowBytes = (t.type.typeSize * cols) / t.type.blockSize;
    const bytes = rowBytes * rows;
    if (t.bytes !== bytes || t.offset + bytes > this.data.length) {
      throw new TensorShapeError(`tensor ${name} needs ${bytes} bytes at data offset ${t.offset} but the file has ${this.data.length - t.offset}`, {
        tensor: name,
        offset: t.offset,
        bytes,
      });
    }
    const start = this.data.byteOffset + t.offset;
    let u8 = new Uint8Array(this.data.buffer, start, bytes);
    // A Float32Array view needs 4-byte alignment; GGUF aligns tensor data to 32 bytes, so this only
    // copies when the caller's buffer itself starts misaligned.
    if (type === "F32" && start % 4 !== 0) u8 = u8.slice();
    const f32 = type === "F32" ? new Float32Array(u8.buffer, u8.byteOffset, bytes / 4) : null;
    const i8 = new Int8Array(u8.buffer, u8.byteOffset, bytes);
    return { name, type, rows, cols, rowBytes, u8, i8, f32 };
  }

  /** An F32 vector (norm weights, biases). */
  vector(name: string, n: number): Float32Array {
    const m = this.matrix(name, n, 1);
    if (!m.f32) throw new UnsupportedTensorTypeError(name, `${m.type} (norm and bias tensors must be F32)`);
    return m.f32;
  }
}
