// Weight tensors as views into the loaded GGUF bytes (never a second copy of the file), checked
// against the header: a tensor of the wrong size, an unsupported type or a missing tensor is a
// typed error that names it.

import type { GgufHeader, GgufTensorInfo } from "../gguf/header.js";
import { ModelConfigError, TensorShapeError, UnsupportedTensorTypeError } from "../errors.js";
import { WEIGHT_TYPES, type WeightTypeName } from "./kernels/quant-rows.js";
import type { WeightMatrix } from "./kernels/matvec.js";

export class WeightSet {
  private readonly byName = new Map<string, GgufTensorInfo>();

  /**
   * `data` holds the tensor data region (byte 0 is the header's `dataOffset` in the file), or, with
   * `offsets`, only the resident tensors packed at those offsets: a tensor absent from `offsets` is
   * streamed (its bytes go straight into wasm memory) and `matrix` gives its shape with no bytes.
   */
  constructor(readonly header: GgufHeader, readonly data: Uint8Array, private readonly offsets: ReadonlyMap<string, number> | null = null) {
    for (const t of header.tensors) this.byName.set(t.name, t);
  }

  /** Whether `name` has no bytes here (a streaming load fills its wasm copy after the model is built). */
  isStreamed(name: string): boolean {
    return this.offsets !== null && this.byName.has(name) && !this.offsets.has(name);
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
    if (this.isStreamed(name)) {
      if (t.bytes !== bytes) throw new TensorShapeError(`tensor ${name} needs ${bytes} bytes but the header gives it ${t.bytes}`, { tensor: name, offset: t.offset, bytes });
      const none = new Uint8Array(0);
      return { name, type, rows, cols, rowBytes, u8: none, i8: new Int8Array(0), f32: type === "F32" ? new Float32Array(0) : null };
    }
    const at = this.offsets?.get(name) ?? t.offset;
    if (t.bytes !== bytes || at + bytes > this.data.length) {
      throw new TensorShapeError(`tensor ${name} needs ${bytes} bytes at data offset ${t.offset} but the file has ${this.data.length - at}`, {
        tensor: name,
        offset: t.offset,
        bytes,
      });
    }
    const start = this.data.byteOffset + at;
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
