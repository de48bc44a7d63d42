// The one read interface every model byte goes through: a local file, a URL (HTTP Range), a Blob
// or bytes in memory. The header reader uses it for the header; weight loading reads tensor
// ranges through the same sources.

export interface ByteSource {
  /**
   * Total bytes, when known. An HTTP source learns it from its first response (Content-Range or
   * Content-Length), so read it after a `read`.
   */
  readonly size: number | undefined;
  /** What this source reads, for messages: a path, a URL, "blob" or "memory". */
  readonly name: string;
  /**
   * Up to `length` bytes starting at `offset`. Shorter only at the end of the data (empty past
   * it). The returned array may be a view the caller must not write into.
   */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array>;
  /** Releases a file handle or similar; reading after it is an error. Optional no-op. */
  close(): Promise<void>;
}
