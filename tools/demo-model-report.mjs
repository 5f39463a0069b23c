#!/usr/bin/env node
// Writes docs/DEMO_MODEL.md and docs/demo-loss.svg from the training script's training.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const dir = join(root, 'public/models/tiny-shakespeare-gpt2');
const t = JSON.parse(readFileSync(join(dir, 'training.json'), 'utf8'));
const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));

// loss curve as a small hand-written SVG: no plotting dependency for one chart
const W = 640;
const H = 320;
const pad = { l: 56, r: 16, t: 16, b: 40 };
const pts = t.curve;
const maxStep = Math.max(...pts.map((p) => p.step));
const losses = pts.flatMap((p) => [p.train_loss, p.val_loss]).filter((x) => x !== null);
const lo = Math.floor(Math.min(...losses));
const hi = Math.ceil(Math.max(...losses));
const x = (s) => pad.l + ((W - pad.l - pad.r) * s) / maxStep;
const y = (v) => pad.t + ((H - pad.t - pad.b) * (hi - v)) / (hi - lo);
const line = (key) =>
  pts
    .filter((p) => p[key] !== null)
    .map((p, i) => `${i ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p[key]).toFixed(1)}`)
    .join(' ');
const yTicks = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
const xTicks = Array.from({ length: 7 }, (_, i) => Math.round((maxStep * i) / 6));
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
${yTicks.map((v) => `<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${pad.l - 8}" y="${y(v) + 4}" text-anchor="end">${v}</text>`).join('\n')}
${xTicks.map((s) => `<text x="${x(s)}" y="${H - pad.b + 18}" text-anchor="middle">${s}</text>`).join('\n')}
<text x="${(W + pad.l) / 2}" y="${H - 6}" text-anchor="middle">step</text>
<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">cross-entropy (nats/token)</text>
<path d="${line('train_loss')}" fill="none" stroke="#3b6fd8" stroke-width="2"/>
<path d="${line('val_loss')}" fill="none" stroke="#e0803a" stroke-width="2"/>
<text x="${W - pad.r - 150}" y="${pad.t + 14}" fill="#3b6fd8">training loss</text>
<text x="${W - pad.r - 150}" y="${pad.t + 30}" fill="#e0803a">held-out loss</text>
</svg>
`;
writeFileSync(join(root, 'docs/demo-loss.svg'), svg);

const rows = pts
  .map(
    (p) =>
      `| ${p.step} | ${p.train_loss === null ? '—' : p.train_loss.toFixed(3)} | ${p.val_loss.toFixed(3)} | ${Math.exp(p.val_loss).toFixed(1)} |`,
  )
  .join('\n');
const md = `# The demo model: tiny-shakespeare-gpt2

A small causal language model with the GPT-2 architecture, trained here, offline and seeded, by
\`tools/train_demo_model.py\` (Debian's python3-torch) on \`tinyshakespeare.txt\` (public domain):
the first 90 % for training, the last 10 % held out. It ships in \`public/models/tiny-shakespeare-gpt2/\`
laid out as Hugging Face publishes GPT-2 (\`onnx/model.onnx\`, \`config.json\`, \`generation_config.json\`,
\`tokenizer.json\`, \`tokenizer_config.json\`), with \`heldout.txt\`, so the studio opens it with no network and
transformers.js generates from the folder as it is.

| | |
|---|---|
| architecture | GPT-2: learned positions, pre-LayerNorm blocks, GELU (tanh) MLP, tied input/output embedding |
| size | ${t.params.toLocaleString('en-US')} parameters: ${cfg.n_layer} layers, d = ${cfg.n_embd}, ${cfg.n_head} heads, context ${cfg.n_positions}, vocabulary ${cfg.vocab_size} |
| tokenizer | byte-level BPE trained on the training split, saved as a Hugging Face \`tokenizer.json\` |
| weight names | Hugging Face GPT-2 (\`transformer.h.0.attn.c_attn.weight\`, …) |
| ONNX | opset 17 with a KV cache: \`past_key_values.*\` in, \`present.*\` out (Optimum's GPT-2 I/O) |
| training | ${t.steps} steps of ${t.batch} × ${t.ctx} tokens (AdamW, cosine schedule), ${t.train_tokens.toLocaleString('en-US')} training tokens, ${(t.seconds / 60).toFixed(0)} min on 2 CPU cores |

**Held-out perplexity: ${t.heldout_perplexity.toFixed(2)}** (PyTorch, strided window ctx ${t.protocol.ctx}, stride
${t.protocol.stride}, ${t.protocol.tokens_scored.toLocaleString('en-US')} tokens scored of \`${t.protocol.text}\`).
The studio computes the same protocol with onnxruntime (CLI and browser); the tests hold them to it
(see the quality tests and \`docs/BENCHMARKS.md\`).

For scale: a uniform guess over the vocabulary would score ${cfg.vocab_size}.

![loss curve](demo-loss.svg)

| step | training loss | held-out loss | held-out perplexity (per window) |
|---:|---:|---:|---:|
${rows}

Re-export the same weights in the current layout (no training): \`/usr/bin/python3 tools/train_demo_model.py --reexport\`
(the KV-cache graph replaced the plain one this way; perplexity 46.3248 before and after).

Retrain (about ${Math.round(t.seconds / 60)} minutes on 2 cores): \`/usr/bin/python3 tools/train_demo_model.py --steps ${t.steps} --batch ${t.batch}\`.
`;
writeFileSync(join(root, 'docs/DEMO_MODEL.md'), md);
console.log('wrote docs/DEMO_MODEL.md and docs/demo-loss.svg');
