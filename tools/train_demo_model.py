#!/usr/bin/env python3
"""Train the studio's demo model: a small GPT-2 on tinyshakespeare, with its own byte-level BPE.

Runs once, offline, seeded, on Debian's python3-torch / python3-onnx / python3-regex:

    /usr/bin/python3 tools/train_demo_model.py [--steps N] [--out public/models/tiny-shakespeare-gpt2]
    /usr/bin/python3 tools/train_demo_model.py --reexport   # the shipped weights in the current ONNX layout

Writes onnx/model.onnx (HF GPT-2 names; Optimum's KV-cache I/O, as transformers.js loads it),
tokenizer.json (HF format), config.json, generation_config.json, tokenizer_config.json, heldout.txt,
heldout_ids.json (the python tokenizer's ids, so the JS tokenizer can be checked against it) and
training.json (loss curve, held-out perplexity and the protocol it was measured with).
"""

import argparse
import collections
import json
import math
import os
import random
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def bytes_to_unicode():
    # GPT-2's reversible byte -> printable unicode map (so BPE never sees whitespace/control bytes).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def pretokenize(text):
    import regex  # only training tokenizes (--reexport needs no python3-regex)

    return ["".join(BYTE_ENCODER[b] for b in piece.encode("utf-8")) for piece in regex.findall(GPT2_PATTERN, text)]


def train_bpe(text, vocab_size):
    words = collections.Counter(pretokenize(text))
    splits = {w: list(w) for w in words}
    vocab = [EOT] + [BYTE_ENCODER[b] for b in range(256)]
    merges = []
    while len(vocab) < vocab_size:
        pairs = collections.Counter()
        for w, freq in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += freq
        if not pairs:
            break
        # Ties broken lexicographically so the vocabulary is deterministic.
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = best[0] + best[1]
        vocab.append(merged)
        for w in words:
            s = splits[w]
            if len(s) < 2:
                continue
            out, i = [], 0
            while i < len(s):
                if i < len(s) - 1 and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return vocab, merges


def bpe_encode(text, token_to_id, ranks, cache):
    ids = []
    for piece in pretokenize(text):
        if piece in cache:
            ids.extend(cache[piece])
            continue
        parts = list(piece)
        while len(parts) > 1:
            candidates = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(candidates)
            if rank == math.inf:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        cache[piece] = [token_to_id[p] for p in parts]
        ids.extend(cache[piece])
    return ids


def tokenizer_json(vocab, merges):
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": 0, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(vocab)},
            "merges": [a + " " + b for a, b in merges],
        },
    }


class Conv1D(nn.Module):
    # HF GPT-2's linear layer: weight stored [in, out], so the ONNX MatMul/Gemm weight is [K, N] as-is.
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class Block(nn.Module):
    def __init__(self, d, n_head, n_layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(d, 3 * d)
        self.attn.c_proj = Conv1D(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(d, 4 * d)
        self.mlp.c_proj = Conv1D(4 * d, d)
        # GPT-2's scaled init of residual projections.
        nn.init.normal_(self.attn.c_proj.weight, std=0.02 / math.sqrt(2 * n_layer))
        nn.init.normal_(self.mlp.c_proj.weight, std=0.02 / math.sqrt(2 * n_layer))
        self.n_head = n_head

    def forward(self, x, mask, past_key=None, past_value=None):
        b, t, d = x.shape
        h = self.ln_1(x)
        q, k, v = self.attn.c_attn(h).split(d, dim=2)
        q = q.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
        k = k.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
        if past_key is not None:
            # KV cache: [b, heads, past, head_dim] ++ this step's keys/values along the sequence axis.
            k = torch.cat([past_key, k], dim=2)
            v = torch.cat([past_value, v], dim=2)
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.n_head)
        att = att.masked_fill(mask, torch.finfo(att.dtype).min)
        y = torch.matmul(torch.softmax(att, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn.c_proj(y)
        x = x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, k, v


class GPT2(nn.Module):
    def __init__(self, vocab, ctx, d, n_layer, n_head):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, d)
        self.transformer.wpe = nn.Embedding(ctx, d)
        self.transformer.h = nn.ModuleList([Block(d, n_head, n_layer) for _ in range(n_layer)])
        self.transformer.ln_f = nn.LayerNorm(d)
        nn.init.normal_(self.transformer.wte.weight, std=0.02)
        nn.init.normal_(self.transformer.wpe.weight, std=0.01)

    def forward(self, input_ids, attention_mask):
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(pos)
        causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).triu(1)
        # True = masked: future positions and padded keys.
        mask = causal.view(1, 1, t, t) | (attention_mask.view(-1, 1, 1, t) == 0)
        for block in self.transformer.h:
            x, _, _ = block(x, mask)
        x = self.transformer.ln_f(x)
        return torch.matmul(x, self.transformer.wte.weight.t())  # tied LM head

    def forward_with_past(self, input_ids, attention_mask, position_ids, *past):
        """The Hugging Face/Optimum "with past" signature transformers.js runs: past_key_values.{i}.key/.value
        [b, heads, past, head_dim] in (empty for the prompt), logits and present.{i}.key/.value out."""
        b, t = input_ids.shape
        past_len = past[0].shape[2]
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)
        # query i sits at absolute position past_len + i and sees keys 0 … past_len + i
        query_at = torch.arange(t, device=input_ids.device) + past_len
        key_at = torch.arange(past_len + t, device=input_ids.device)
        causal = key_at.view(1, -1) > query_at.view(-1, 1)
        # True = masked: future positions and padded keys (attention_mask covers past and new tokens).
        mask = causal.view(1, 1, t, past_len + t) | (attention_mask.view(b, 1, 1, -1) == 0)
        presents = []
        for i, block in enumerate(self.transformer.h):
            x, k, v = block(x, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        x = self.transformer.ln_f(x)
        return (torch.matmul(x, self.transformer.wte.weight.t()), *presents)


def strided_perplexity(model, ids, ctx, stride):
    # Hugging Face's strided sliding window: each window scores only the tokens not scored before.
    nll, count, prev_end = 0.0, 0, 0
    ids = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + ctx, len(ids))
            window = ids[begin:end].unsqueeze(0)
            logits = model(window, torch.ones_like(window))
            logp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
            targets = window[0, 1:]
            token_nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
            first_new = max(prev_end - begin, 0)  # positions before this were scored by an earlier window
            scored = token_nll[max(first_new - 1, 0) :] if first_new > 0 else token_nll
            nll += scored.sum().item()
            count += scored.numel()
            prev_end = end
            if end == len(ids):
                break
    return math.exp(nll / count), count


def export_onnx(model, path, ctx):
    """The model as Hugging Face/Optimum publish GPT-2 (the layout transformers.js loads): inputs input_ids,
    attention_mask, position_ids, past_key_values.{i}.key/.value; outputs logits, present.{i}.key/.value."""
    model.eval()
    n_layer = len(model.transformer.h)
    d = model.transformer.wte.weight.shape[1]
    n_head = model.transformer.h[0].n_head
    past_len, t = 3, 4  # a non-empty cache when tracing, so the past/present axes stay symbolic
    ids = torch.zeros(1, t, dtype=torch.long)
    past = [torch.zeros(1, n_head, past_len, d // n_head) for _ in range(2 * n_layer)]
    names = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    presents = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    dynamic = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "past_sequence_length + sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for name in names:
        dynamic[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in presents:
        dynamic[name] = {0: "batch_size", 2: "past_sequence_length + sequence_length"}
    # torch.onnx.export traces forward(): route it to the KV-cache signature (the parameter names stay
    # the module's own, transformer.h.0.attn.c_attn.weight …)
    model.forward = model.forward_with_past
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones(1, past_len + t, dtype=torch.long), torch.arange(past_len, past_len + t).unsqueeze(0), *past),
            path,
            input_names=["input_ids", "attention_mask", "position_ids", *names],
            output_names=["logits", *presents],
            dynamic_axes=dynamic,
            opset_version=17,
            do_constant_folding=True,
        )
    del model.forward
    # Constant folding writes the LM head as a transposed copy of wte; put the tie back (one weight, one Transpose).
    m = onnx.load(path)
    g = m.graph
    wte = next(i for i in g.initializer if i.name == "transformer.wte.weight")
    wte_t = numpy_helper.to_array(wte).T
    for init in list(g.initializer):
        if init.name != wte.name and tuple(init.dims) == wte_t.shape and np.array_equal(numpy_helper.to_array(init), wte_t):
            g.initializer.remove(init)
            g.node.insert(0, helper.make_node("Transpose", [wte.name], [init.name], name="lm_head_tied_transpose", perm=[1, 0]))
    onnx.checker.check_model(m)
    onnx.save(m, path)


def load_onnx_weights(model, path):
    """Reads the weights back out of an exported model.onnx (same parameter names), so the graph can be
    re-exported without retraining."""
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(path).graph.initializer}
    state = model.state_dict()
    missing = [n for n in state if n not in inits]
    if missing:
        raise SystemExit(f"{path} lacks {missing}")
    model.load_state_dict({n: inits[n] for n in state})


def write_hf_files(out, config):
    """config.json, generation_config.json and tokenizer_config.json as the Hub has them for GPT-2."""
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}, f, indent=2)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "add_prefix_space": False,
                "bos_token": EOT,
                "eos_token": EOT,
                "unk_token": EOT,
                "model_max_length": config["n_positions"],
                "clean_up_tokenization_spaces": False,
            },
            f,
            indent=2,
        )


def reexport(out):
    """Re-exports the shipped model from its own weights (onnx/model.onnx, else the older top-level
    model.onnx) in the KV-cache layout, and checks it against the weights' PyTorch forward."""
    config = json.load(open(os.path.join(out, "config.json")))
    src = os.path.join(out, "onnx", "model.onnx")
    if not os.path.exists(src):
        src = os.path.join(out, "model.onnx")
    model = GPT2(config["vocab_size"], config["n_positions"], config["n_embd"], config["n_layer"], config["n_head"])
    load_onnx_weights(model, src)
    model.eval()
    os.makedirs(os.path.join(out, "onnx"), exist_ok=True)
    dst = os.path.join(out, "onnx", "model.onnx")
    export_onnx(model, dst + ".tmp", config["n_positions"])
    os.replace(dst + ".tmp", dst)
    if src != dst:
        os.remove(src)
    write_hf_files(out, config)
    heldout_ids = json.load(open(os.path.join(out, "heldout_ids.json")))
    ppl, scored = strided_perplexity(model, heldout_ids, config["n_positions"], 64)
    print(f"re-exported {dst}; PyTorch held-out perplexity {ppl:.4f} over {scored} tokens (ctx {config['n_positions']}, stride 64)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "public", "models", "tiny-shakespeare-gpt2"))
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--d", type=int, default=192)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--reexport", action="store_true", help="re-export the model in --out from its own weights; no training")
    args = ap.parse_args()
    if args.reexport:
        reexport(args.out)
        return

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)

    text = open(args.text, encoding="utf-8").read()
    split = int(len(text) * 0.9)
    # Cut at a line start so the held-out text begins cleanly.
    split = text.index("\n", split) + 1
    train_text, heldout_text = text[:split], text[split:]

    t0 = time.time()
    vocab, merges = train_bpe(train_text, args.vocab)
    token_to_id = {t: i for i, t in enumerate(vocab)}
    ranks = {m: i for i, m in enumerate(merges)}
    cache = {}
    train_ids = bpe_encode(train_text, token_to_id, ranks, cache)
    heldout_ids = bpe_encode(heldout_text, token_to_id, ranks, cache)
    print(f"bpe: {len(vocab)} tokens, {len(train_ids)} train / {len(heldout_ids)} held-out tokens, {time.time() - t0:.1f}s", flush=True)

    model = GPT2(len(vocab), args.ctx, args.d, args.layers, args.heads)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    data = torch.tensor(train_ids, dtype=torch.long)
    held = torch.tensor(heldout_ids, dtype=torch.long)
    curve = []
    warmup = 100
    t0 = time.time()
    for step in range(args.steps + 1):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        if step % 100 == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                gen = torch.Generator().manual_seed(1)
                starts = torch.randint(0, len(held) - args.ctx - 1, (16,), generator=gen)
                xb = torch.stack([held[s : s + args.ctx] for s in starts])
                yb = torch.stack([held[s + 1 : s + args.ctx + 1] for s in starts])
                val = F.cross_entropy(model(xb, torch.ones_like(xb)).reshape(-1, len(vocab)), yb.reshape(-1)).item()
            curve.append({"step": step, "train_loss": curve_train if step else None, "val_loss": val})
            print(f"step {step} train {curve_train if step else float('nan'):.4f} val {val:.4f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
            model.train()
        if step == args.steps:
            break
        starts = torch.randint(0, len(data) - args.ctx - 1, (args.batch,))
        xb = torch.stack([data[s : s + args.ctx] for s in starts])
        yb = torch.stack([data[s + 1 : s + args.ctx + 1] for s in starts])
        loss = F.cross_entropy(model(xb, torch.ones_like(xb)).reshape(-1, len(vocab)), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve_train = loss.item()

    model.eval()
    ppl, scored = strided_perplexity(model, heldout_ids, args.ctx, args.stride)
    print(f"held-out perplexity {ppl:.4f} over {scored} tokens (ctx {args.ctx}, stride {args.stride})", flush=True)

    os.makedirs(os.path.join(args.out, "onnx"), exist_ok=True)
    export_onnx(model, os.path.join(args.out, "onnx", "model.onnx"), args.ctx)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": len(vocab),
        "n_positions": args.ctx,
        "n_ctx": args.ctx,
        "n_embd": args.d,
        "n_layer": args.layers,
        "n_head": args.heads,
        "activation_function": "gelu_new",
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    write_hf_files(args.out, config)
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(heldout_text)
    with open(os.path.join(args.out, "heldout_ids.json"), "w") as f:
        json.dump(heldout_ids, f)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(
            {
                "params": n_params,
                "steps": args.steps,
                "batch": args.batch,
                "ctx": args.ctx,
                "train_tokens": len(train_ids),
                "heldout_tokens": len(heldout_ids),
                "heldout_perplexity": ppl,
                "protocol": {"ctx": args.ctx, "stride": args.stride, "tokens_scored": scored, "text": "heldout.txt"},
                "curve": curve,
                "seconds": time.time() - t0,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
