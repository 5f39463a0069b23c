"""PyTorch reference for the stories260K distillation / QAT rows of the bench (issue 11): the same
model, data, batches, loss, optimizer, masks and fake quantizer as the studio's engine
(src/core/train/*, tools/bench/qat.ts), so a gap between the engine and the issue's reference can be
put on the engine or on the protocol.

What it replicates (read from the engine's sources):
- model: stories260K with the weights of tests/fixtures/stories260K/model.onnx (its own RoPE tables,
  interleaved pairs; 8 query / 4 KV heads; RMSNorm eps 1e-5; SwiGLU). The ONNX file stores the tied
  embedding twice, `emb` [512, 64] (Gather) and `lm_head` [64, 512] (= emb^T): the engine trains them
  as two weights (untied); `--tied` trains one shared table instead (llama2.c's layout).
  Check: perplexity on ids.txt (each story from its first token, 1,804 predictions) = 3.5482.
- batches: windowSampler (distill.ts) with seededUniform (mulberry32, generate.ts), seed 0: rows of
  `seq` tokens drawn uniformly over every start where a window fits, 16 rows a step, in that order.
- loss (loss.ts): alpha * T^2 * KL(teacher || student at T), mean over all B*L positions, plus
  (1 - alpha) * CE, mean over the B*(L-1) positions with a next token. Teacher: the fp32 model.
- AdamW (optim.ts) = torch.optim.AdamW (betas 0.9/0.999, eps 1e-8), weight decay 0.01 on tensors of
  rank >= 2 only (emb and lm_head included), linear warm-up then cosine to 0 (learningRate).
- 2:4 (src/methods/prune): layer matrices only (not emb / lm_head), in every group of 4 consecutive
  weights along the reduction axis (rows of a [K, N] MatMul weight) keep the 2 of largest |w|
  (earlier index wins a tie); the zeros are re-applied after every optimizer step.
- int4 b32 symmetric (src/methods/int4/kernel.ts): layer matrices only; blocks of 32 down each column
  of [K, N]; m = the block's value of largest magnitude (signed), s = m / -8,
  w' = s * clamp(floor(w / s + 0.5), -8, 7) (round half up); identity straight-through gradient.

Usage (one thread, offline baseline only: never imported by the app or its tests):
  nice -n 10 /usr/bin/python3 tools/bench/qat_reference.py check
  nice -n 10 /usr/bin/python3 tools/bench/qat_reference.py train --method prune24 \
      --data /tmp/benchcache-qat/qat-data-256-256-seed0.json [--steps 300] [--lr 1e-3] [--warmup 20] \
      [--checkpoints 100,200,300] [--tied] [--stop-at N] [--sampler window|sequential]
  nice -n 10 /usr/bin/python3 tools/bench/qat_reference.py generate --count 4800 --out FILE.json [--seed 1]
  (method: prune24 | int4 | none; --data: a JSON array of token-id arrays, e.g. the bench's cache or
  `generate`'s output). Prints one JSON line per checkpoint and the first step's loss (KL, CE).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

ROOT = __file__.rsplit("/tools/bench/", 1)[0]
MODEL = f"{ROOT}/tests/fixtures/stories260K/model.onnx"
IDS = f"{ROOT}/tests/fixtures/stories260K/ids.txt"
LAYERS = 5
HEADS = 8
KV_HEADS = 4
HEAD_DIM = 8
MATRICES = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")


def load_initializers(path=MODEL):
    model = onnx.load(path)
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}


class Stories(torch.nn.Module):
    """stories260K as its ONNX graph computes it; parameters named as the ONNX initializers."""

    def __init__(self, init, tied=False):
        super().__init__()
        self.tied = tied
        names = ["emb", "rms_final"] + ([] if tied else ["lm_head"])
        for i in range(LAYERS):
            names += [f"l{i}.rms_att", f"l{i}.rms_ffn"] + [f"l{i}.{m}" for m in MATRICES]
        self.p = torch.nn.ParameterDict({n.replace(".", "_"): torch.nn.Parameter(init[n].clone()) for n in names})
        self.register_buffer("cos", init["cos_tab"][:, 0, :, 0].clone())  # [512, 4]
        self.register_buffer("sin", init["sin_tab"][:, 0, :, 0].clone())
        self.eps = float(init["eps"])
        self.scale = float(init["scale"])
        # what the forward pass reads in place of a weight (fake quantization); identity by default
        self.transform = None

    def named_weights(self):
        return {k.replace("_", ".", 1) if k[0] == "l" and k[1].isdigit() else k: v for k, v in self.p.items()}

    def w(self, name):
        t = self.p[name.replace(".", "_")]
        return self.transform(name, t) if self.transform else t

    def rms(self, x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, start=0):
        # x [B, L, H, 8] as [B, L, H, 4, 2] interleaved pairs
        B, L, H, _ = x.shape
        x = x.view(B, L, H, 4, 2)
        c = self.cos[start : start + L].view(1, L, 1, 4)
        s = self.sin[start : start + L].view(1, L, 1, 4)
        a, b = x[..., 0], x[..., 1]
        return torch.stack([a * c - b * s, a * s + b * c], -1).view(B, L, H, HEAD_DIM)

    def forward(self, ids, cache=None):
        """ids [B, L] -> logits [B, L, 512]. cache: a list (one (k, v) per layer) to extend (generation)."""
        B, L = ids.shape
        start = cache[0][0].shape[2] if cache and cache[0] is not None else 0
        x = self.w("emb")[ids]
        for i in range(LAYERS):
            h = self.rms(x, self.w(f"l{i}.rms_att"))
            q = self.rope((h @ self.w(f"l{i}.wq")).view(B, L, HEADS, HEAD_DIM), start).transpose(1, 2)
            k = self.rope((h @ self.w(f"l{i}.wk")).view(B, L, KV_HEADS, HEAD_DIM), start).transpose(1, 2)
            v = (h @ self.w(f"l{i}.wv")).view(B, L, KV_HEADS, HEAD_DIM).transpose(1, 2)
            if cache is not None:
                if cache[i] is not None:
                    k = torch.cat([cache[i][0], k], 2)
                    v = torch.cat([cache[i][1], v], 2)
                cache[i] = (k, v)
            k = k.repeat_interleave(HEADS // KV_HEADS, 1)  # kvmap [0 0 1 1 2 2 3 3]
            v = v.repeat_interleave(HEADS // KV_HEADS, 1)
            s = (q @ k.transpose(-1, -2)) * self.scale
            T = k.shape[2]
            mask = torch.ones(L, T, dtype=torch.bool).tril(T - L)
            s = s.masked_fill(~mask, -1e9).softmax(-1)
            x = x + (s @ v).transpose(1, 2).reshape(B, L, HEADS * HEAD_DIM) @ self.w(f"l{i}.wo")
            h = self.rms(x, self.w(f"l{i}.rms_ffn"))
            a = h @ self.w(f"l{i}.w1")
            x = x + (a * torch.sigmoid(a) * (h @ self.w(f"l{i}.w3"))) @ self.w(f"l{i}.w2")
        head = self.w("emb").t() if self.tied else self.w("lm_head")
        return self.rms(x, self.w("rms_final")) @ head


def read_ids(path=IDS):
    return [[int(t) for t in line.split()] for line in open(path) if line.strip()]


@torch.no_grad()
def perplexity(model, stories):
    """Each story scored from its first token (the fixture's protocol; every story fits in 512)."""
    nll, n = 0.0, 0
    for s in stories:
        ids = torch.tensor([s])
        logp = model(ids)[0, :-1].double().log_softmax(-1)
        nll -= logp[torch.arange(len(s) - 1), ids[0, 1:]].sum().item()
        n += len(s) - 1
    return math.exp(nll / n), n


def mulberry32(seed):
    """seededUniform of src/core/calibrate/generate.ts, bit for bit."""
    a = seed & 0xFFFFFFFF
    M = 0xFFFFFFFF

    def imul(x, y):
        return (x * y) & M

    def uniform():
        nonlocal a
        a = (a + 0x6D2B79F5) & M
        t = a
        t = imul(t ^ (t >> 15), t | 1)
        t ^= (t + imul(t ^ (t >> 7), t | 61)) & M
        return ((t ^ (t >> 14)) & M) / 4294967296

    return uniform


def window_sampler(data, seq, seed):
    """windowSampler of src/core/train/distill.ts: windows drawn uniformly over every fitting start."""
    fits = [s for s in data if len(s) >= seq]
    starts, total = [], 0
    for s in fits:
        total += len(s) - seq + 1
        starts.append(total)
    uniform = mulberry32(seed)

    def sample():
        k = math.floor(uniform() * total)
        i = 0
        while starts[i] <= k:
            i += 1
        begin = k - (starts[i - 1] if i else 0)
        return fits[i][begin : begin + seq]

    return sample


def sequential_sampler(data, seq, path=None):
    """Fresh data: the i-th row is the first `seq` tokens of sequence i, each sequence used once. When
    the rows run past the data, the file is read again (`generate` appends chunks while a run goes on)."""
    at = 0

    def sample():
        nonlocal at, data
        while at >= len(data):
            if not path:
                raise SystemExit(f"sequential sampler: the {len(data)} sequences are used up")
            time.sleep(10)
            data = json.load(open(path))
        at += 1
        return data[at - 1][:seq]

    return sample


def kd_loss(zs, zt, ids, T=2.0, alpha=0.5):
    """loss.ts: KL mean over every position, CE mean over positions with a next token; float64."""
    zs64 = zs.double()
    kl = F.kl_div((zs64 / T).log_softmax(-1), (zt.double() / T).log_softmax(-1), log_target=True, reduction="none")
    kl = kl.sum(-1).mean()
    ce = F.cross_entropy(zs64[:, :-1].reshape(-1, zs.shape[-1]), ids[:, 1:].reshape(-1))
    return alpha * T * T * kl + (1 - alpha) * ce, kl, ce


def learning_rate(s, lr, steps, warmup):
    """learningRate of optim.ts (cosine): s is 0-based."""
    if s < warmup:
        return lr * (s + 1) / warmup
    progress = min(1.0, (s - warmup) / max(1, steps - warmup))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def prune_nm(w, n=2, m=4):
    """pruneNM along the reduction axis (rows of [K, N]): keep the n largest |w| of every m (ties: earlier)."""
    K, N = w.shape
    out = w.clone()
    for g in range(0, K, m):
        block = w[g : g + m].abs()  # [<=m, N]
        if block.shape[0] <= n:
            continue
        # stable sort descending by |w|: earlier index wins ties
        order = torch.from_numpy(np.argsort(-block.numpy(), axis=0, kind="stable"))
        drop = order[n:]
        out[g : g + m].scatter_(0, drop, 0.0)
    return out


def int4_fake(w, block=32):
    """Symmetric int4, blocks of `block` down each column of [K, N], as kernel.ts's quantizer."""
    K, N = w.shape
    pad = (-K) % block
    x = torch.cat([w, torch.zeros(pad, N)]) if pad else w
    x = x.view(-1, block, N)
    hi = x.clamp(min=0).amax(1, keepdim=True)
    lo = x.clamp(max=0).amin(1, keepdim=True)
    m = torch.where(-lo > hi, lo, hi)
    s = m / -8
    inv = torch.where(s != 0, 1 / s.double(), torch.zeros_like(s, dtype=torch.float64))
    q = torch.floor(x.double() * inv + 0.5).clamp(-8, 7)
    return (q * s.double()).float().view(-1, N)[:K]


def ste_int4(targets, block=32):
    def transform(name, t):
        if name not in targets:
            return t
        with torch.no_grad():
            q = int4_fake(t.detach(), block)
        return t + (q - t).detach()

    return transform


def layer_matrices():
    return [f"l{i}.{m}" for i in range(LAYERS) for m in MATRICES]


def build(method, tied):
    init = load_initializers()
    student = Stories(init, tied=tied)
    teacher = Stories(init)
    for p in teacher.parameters():
        p.requires_grad_(False)
    masks = {}
    if method == "prune24":
        with torch.no_grad():
            for name in layer_matrices():
                p = student.p[name.replace(".", "_")]
                p.copy_(prune_nm(p.detach()))
                masks[name] = (p != 0).float()
    elif method == "int4":
        student.transform = ste_int4(set(layer_matrices()))
    return student, teacher, masks


def optimizer_for(student, lr, wd, beta2=0.999):
    """AdamW as optim.ts: decay on tensors of rank >= 2 only."""
    params = list(student.p.values())
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, beta2), eps=1e-8)


def run_steps(student, teacher, masks, data, args, stop):
    """distill.ts's loop: yields (step, loss, kl, ce, tokens per CPU second) after each update."""
    opt = optimizer_for(student, args.lr, args.wd, getattr(args, "beta2", 0.999))
    sample = (sequential_sampler(data, args.seq, getattr(args, "data", None)) if getattr(args, "sampler", "") == "sequential"
              else window_sampler(data, args.seq, args.seed))
    cpu0 = time.process_time()
    tokens = 0
    # the teacher's logits per window, kept when the data has few distinct windows (the bench's 256
    # sequences of 256 give 512 windows of 255: 267 MB); fresh data is scored every time
    windows = sum(len(d) - args.seq + 1 for d in data if len(d) >= args.seq)
    cache = {} if windows <= 1024 else None
    for s in range(stop):
        picked = [sample() for _ in range(args.batch)]
        rows = torch.tensor(picked)
        with torch.no_grad():
            if cache is None:
                zt = teacher(rows)
            else:
                missing = [i for i, r in enumerate(picked) if tuple(r) not in cache]
                if missing:
                    for i, z in zip(missing, teacher(rows[missing])):
                        cache[tuple(picked[i])] = z
                zt = torch.stack([cache[tuple(r)] for r in picked])
        loss, kl, ce = kd_loss(student(rows), zt, rows, args.T, args.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if getattr(args, "clip", 0) > 0:
            torch.nn.utils.clip_grad_norm_(list(student.p.values()), args.clip)
        for g in opt.param_groups:
            g["lr"] = learning_rate(s, args.lr, args.steps, args.warmup)
        opt.step()
        with torch.no_grad():
            for name, mk in masks.items():
                student.p[name.replace(".", "_")].mul_(mk)
        tokens += rows.numel()
        yield s + 1, loss.item(), kl.item(), ce.item(), tokens / max(1e-9, time.process_time() - cpu0)


def train(args):
    data = json.load(open(args.data))
    student, teacher, masks = build(args.method, args.tied)
    stories = read_ids()
    ckpts = sorted({int(c) for c in args.checkpoints.split(",")} | {args.steps})
    plain = perplexity(student, stories)[0]
    print(json.dumps({"method": args.method, "data": args.data, "sequences": len(data), "tied": args.tied,
                      "lr": args.lr, "warmup": args.warmup, "steps": args.steps, "plain": round(plain, 4)}), flush=True)
    for step, loss, kl, ce, tps in run_steps(student, teacher, masks, data, args, args.stop_at or args.steps):
        if step == 1 or step % 10 == 0:
            print(f"  step {step} loss {loss:.4f} (KL {kl:.4f}, CE {ce:.4f}) {tps:.0f} tokens/CPU-s",
                  file=sys.stderr, flush=True)
        if step == 1:
            print(json.dumps({"first_loss": round(loss, 4), "kl": round(kl, 4), "ce": round(ce, 4)}), flush=True)
        if step in ckpts:
            ppl = perplexity(student, stories)[0]
            print(json.dumps({"step": step, "ppl": round(ppl, 4), "loss": round(loss, 4),
                              "tokens_per_cpu_s": round(tps)}), flush=True)


def compare(args):
    """The engine's first steps (qat-reference-dump.ts's engine.json) against this loop's, value by value."""
    eng = json.load(open(f"{args.dir}/engine.json"))
    o = eng["opts"]
    for k in ("steps", "batch", "seq", "lr", "warmup", "seed"):
        setattr(args, k, o[k])
    args.T, args.alpha, args.wd = o["temperature"], o["alpha"], 0.01
    data = json.load(open(args.data))
    student, teacher, masks = build(eng["method"], False)
    if eng["method"] == "prune24":
        start = load_initializers(f"{args.dir}/student.onnx")
        dev = max((start[n] - student.p[n.replace(".", "_")].detach()).abs().max().item() for n in layer_matrices())
        print(json.dumps({"pruned_student_max_abs_diff": dev}))
    stop = len(eng["losses"])
    for (step, loss, kl, ce, _), e in zip(run_steps(student, teacher, masks, data, args, stop), eng["losses"]):
        print(json.dumps({"step": step, "torch": [round(loss, 6), round(kl, 6), round(ce, 6)],
                          "engine": [round(e["loss"], 6), round(e["kl"], 6), round(e["ce"], 6)]}))
    worst = []
    for name, w in eng["weights"].items():
        t = student.p[name.replace(".", "_")].detach()
        e = torch.tensor(w).view(t.shape)
        start = load_initializers()[name] if eng["method"] != "prune24" else load_initializers(f"{args.dir}/student.onnx")[name]
        moved = (t - start).abs().max().item()
        worst.append((name, (t - e).abs().max().item(), moved))
    worst.sort(key=lambda r: -r[1] / max(r[2], 1e-12))
    for name, diff, moved in worst[:8]:
        print(json.dumps({"weight": name, "max_abs_diff_engine_vs_torch": diff, "max_abs_update_torch": moved}))


@torch.no_grad()
def generate(args):
    """Sequences of `length` tokens from BOS at temperature 1 (batched, with a KV cache)."""
    init = load_initializers()
    model = Stories(init)
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for b0 in range(0, args.count, args.chunk):
        B = min(args.chunk, args.count - b0)
        seqs = torch.ones(B, 1, dtype=torch.long)
        cache = [None] * LAYERS
        nxt = seqs
        while seqs.shape[1] < args.length:
            logits = model(nxt, cache)[:, -1].double()
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)
            seqs = torch.cat([seqs, nxt], 1)
        out += seqs.tolist()
        print(f"  generated {len(out)}/{args.count}", file=sys.stderr, flush=True)
        # written after every chunk: a run can start on the first sequences while the rest generate
        json.dump(out, open(args.out + ".tmp", "w"))
        os.replace(args.out + ".tmp", args.out)


def check(_args):
    init = load_initializers()
    model = Stories(init)
    ppl, n = perplexity(model, read_ids())
    tied = perplexity(Stories(init, tied=True), read_ids())[0]
    # the KV-cache path (generation) against the full forward
    ids = torch.tensor([read_ids()[0][:40]])
    cache = [None] * LAYERS
    step = torch.cat([model(ids[:, :20], cache), model(ids[:, 20:], cache)], 1)
    dev = (step - model(ids)).abs().max().item()
    # int4 against the engine's plain int4 b32 perplexity (bench: 4.391 ... see the row cache)
    model.transform = ste_int4(set(layer_matrices()))
    q = perplexity(model, read_ids())[0]
    print(json.dumps({"fp32": round(ppl, 4), "predictions": n, "tied_head": round(tied, 4), "kv_cache_dev": dev,
                      "int4_b32_plain": round(q, 4)}))
    assert abs(ppl - 3.5482) < 1e-3, ppl


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    t = sub.add_parser("train")
    t.add_argument("--method", choices=["prune24", "int4", "none"], required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--stop-at", type=int, default=0)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seq", type=int, default=255)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=20)
    t.add_argument("--wd", type=float, default=0.01)
    t.add_argument("--beta2", type=float, default=0.999)
    t.add_argument("--clip", type=float, default=0.0, help="clip the gradient's global norm (0: off)")
    t.add_argument("--T", type=float, default=2.0)
    t.add_argument("--alpha", type=float, default=0.5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--tied", action="store_true")
    t.add_argument("--checkpoints", default="100,200,300")
    t.add_argument("--sampler", choices=["window", "sequential"], default="window",
                   help="window: the engine's seeded windowSampler; sequential: each sequence once, in order")
    gnr = sub.add_parser("generate")
    gnr.add_argument("--count", type=int, default=4800)
    gnr.add_argument("--length", type=int, default=256)
    gnr.add_argument("--chunk", type=int, default=4800)
    gnr.add_argument("--seed", type=int, default=1)
    gnr.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--dir", required=True)
    c.add_argument("--data", required=True)
    args = ap.parse_args()
    {"check": check, "train": train, "generate": generate, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
