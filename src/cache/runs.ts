// How the cache describes a sequence's retained tokens to the attention kernel: runs of
// consecutive live slots of one page that share one position offset.
//
// Keys are rotated (RoPE) once, when written, by a per-page "rotation position"; when the policy
// later re-assigns positions (StreamingLLM) the keys are never touched again. Instead, for a run
// whose first token now sits at attention position `pos` but was rotated by `rotPos`, the kernel
// rotates the (pre-RoPE) query by `queryPos + (rotPos - pos)`: since RoPE is a rotation,
// <R(a) q, R(b) k> = <R(a + c) q, R(b + c) k>, which equals dense attention at the re-assigned
// positions. One query rotation per run instead of one per key; quantized keys are never
// re-quantized.

export interface KvRun {
  readonly page: number;
  readonly slotStart: number;
  readonly length: number;
  /** Attention position of the run's first token (original or re-assigned, per the policy). */
  readonly pos: number;
  /** Position the run's first key was rotated by when it was written. */
  readonly rotPos: number;
  /** Index of the run's first token in the sequence's retained order (for attention-score hooks). */
  readonly index: number;
}
