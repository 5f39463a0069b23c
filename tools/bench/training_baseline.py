"""PyTorch CPU baseline for the bench's training section: the demo GPT-2 with the weights read from its
ONNX file, one distillation step as the studio runs it (teacher forward, student forward + backward of
the KD loss T=2 alpha=0.5, AdamW), batch B x L windows of the ids given, and a forward-only pass.

Usage: python3 training_baseline.py MODEL.onnx IDS.json B L STEPS  (prints JSON).
One thread (torch.set_num_threads(1)), as the studio's engine is one thread.
Runs with Debian's python3-torch and python3-onnx; never part of the app or its tests.
"""
import json
import math
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

torch.set_num_threads(1)
torch.set_num_interop_threads(1)


def load_weights(path):
    model = onnx.load(path)
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}


class GPT2(torch.nn.Module):
    """GPT-2 (HF layout: Conv1D weights [in, out], tied head, gelu_new), weights from the ONNX file."""

    def __init__(self, w, layers, heads):
        super().__init__()
        self.layers = layers
        self.heads = heads
        self.p = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v.clone()) for k, v in w.items()})

    def w(self, name):
        return self.p[name.replace(".", "_")]

    def forward(self, ids):
        B, L = ids.shape
        x = self.w("transformer.wte.weight")[ids] + self.w("transformer.wpe.weight")[:L]
        mask = torch.ones(L, L, dtype=torch.bool).tril()
        for i in range(self.layers):
            h = f"transformer.h.{i}."
            a = F.layer_norm(x, x.shape[-1:], self.w(h + "ln_1.weight"), self.w(h + "ln_1.bias"))
            qkv = a @ self.w(h + "attn.c_attn.weight") + self.w(h + "attn.c_attn.bias")
            q, k, v = qkv.split(x.shape[-1], dim=2)
            d = x.shape[-1] // self.heads
            q, k, v = (t.view(B, L, self.heads, d).transpose(1, 2) for t in (q, k, v))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
            s = s.masked_fill(~mask, float("-inf")).softmax(-1)
            o = (s @ v).transpose(1, 2).reshape(B, L, -1)
            x = x + o @ self.w(h + "attn.c_proj.weight") + self.w(h + "attn.c_proj.bias")
            m = F.layer_norm(x, x.shape[-1:], self.w(h + "ln_2.weight"), self.w(h + "ln_2.bias"))
            m = F.gelu(m @ self.w(h + "mlp.c_fc.weight") + self.w(h + "mlp.c_fc.bias"), approximate="tanh")
            x = x + m @ self.w(h + "mlp.c_proj.weight") + self.w(h + "mlp.c_proj.bias")
        x = F.layer_norm(x, x.shape[-1:], self.w("transformer.ln_f.weight"), self.w("transformer.ln_f.bias"))
        return x @ self.w("transformer.wte.weight").t()


def kd_loss(zs, zt, ids, T=2.0, alpha=0.5):
    V = zs.shape[-1]
    kl = F.kl_div(F.log_softmax(zs / T, -1).reshape(-1, V), F.log_softmax(zt / T, -1).reshape(-1, V),
                  log_target=True, reduction="batchmean")
    ce = F.cross_entropy(zs[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    return alpha * T * T * kl + (1 - alpha) * ce


def main():
    path, ids_path, B, L, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    ids = np.array(json.load(open(ids_path)), dtype=np.int64)
    w = load_weights(path)
    layers = sum(1 for k in w if k.endswith("ln_1.weight"))
    heads = int(sys.argv[6]) if len(sys.argv) > 6 else 6
    teacher = GPT2(w, layers, heads).eval()
    student = GPT2(w, layers, heads)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, len(ids) - L, size=B)
        return torch.from_numpy(np.stack([ids[s : s + L] for s in starts]))

    def train_step():
        x = batch()
        with torch.no_grad():
            zt = teacher(x)
        loss = kd_loss(student(x), zt, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def forward_step():
        with torch.no_grad():
            student(batch())

    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, fn in (("train", train_step), ("forward", forward_step)):
        fn()  # warm-up
        t0 = time.perf_counter()
        c0 = time.process_time()
        for _ in range(steps):
            fn()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        out[name] = {
            "steps": steps,
            "seconds": seconds,
            "cpuSeconds": cpu,
            "tokensPerSecond": steps * B * L / seconds,
            "tokensPerCpuSecond": steps * B * L / cpu,
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
