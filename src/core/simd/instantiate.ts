/**
 * A WebAssembly module embedded as base64 (the `*-wasm.ts` files `npm run build:wasm` writes),
 * compiled and instantiated synchronously: the modules are small, and a synchronous instance works in
 * workers, in Node and in the CLI alike, with no await where the kernels are first called.
 */
export function instantiateBase64<Exports>(base64: string, imports?: WebAssembly.Imports): Exports {
  const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
  return new WebAssembly.Instance(new WebAssembly.Module(bytes), imports).exports as unknown as Exports;
}
