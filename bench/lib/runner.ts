// The one interface every engine in bench/model.ts is driven through, so that the same token ids
// and the same step counts reach llama.cpp and kvbound.

export interface EngineRunner {
  /** Engine label for the table ("llama.cpp", "kvbound"). */
  readonly engine: string;
  /** Forgets every cached token (the next prefill starts at position 0). */
  reset(): Promise<void>;
  /** Evaluates `ids` at the next positions into the KV cache; no logits are computed. */
  prefill(ids: readonly number[]): Promise<void>;
  /**
   * Feeds `first` at the next position, then greedily generates `n` tokens: exactly `n` forward
   * passes with logits. Returns the generated ids (end-of-generation tokens included).
   */
  decode(first: number, n: number): Promise<number[]>;
  dispose(): Promise<void>;
}
