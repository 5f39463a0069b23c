/** The bytes of a typed array, as a fresh Uint8Array (initializers own their raw_data). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}
