/**
 * The demo model shipped under public/models/: opened at start with no network beyond this page's own
 * origin. The folder is laid out as Hugging Face publishes GPT-2 (the model, with its KV cache, in
 * onnx/model.onnx), so transformers.js loads the same folder.
 */
export const DEMO_DIR = 'models/tiny-shakespeare-gpt2/';
const DEMO_FILES = ['onnx/model.onnx', 'config.json', 'tokenizer.json'];

export async function fetchDemo(): Promise<{ files: { path: string; file: File }[]; heldout: string }> {
  const base = new URL(DEMO_DIR, document.baseURI);
  const files = await Promise.all(
    DEMO_FILES.map(async (name) => {
      const res = await fetch(new URL(name, base));
      if (!res.ok) throw new Error(`The demo model's ${name} could not be loaded (${res.status}).`);
      return {
        path: `tiny-shakespeare-gpt2/${name}`,
        file: new File([await res.blob()], name.split('/').pop() ?? name),
      };
    }),
  );
  const heldout = await (await fetch(new URL('heldout.txt', base))).text();
  return { files, heldout };
}
