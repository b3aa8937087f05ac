#!/usr/bin/env python3
"""PyTorch peer of `tunelab bench`: the same LoRA training step, KV-cache generation, attention and memory figures,
printed as JSON lines with the same field names (impl "pytorch"), so bench/compare.py can pair them with ours.

Eager PyTorch, fp32, TF32 off. The model is transformers' GPT2LMHeadModel with a PEFT LoRA (r=8, alpha=16, no
dropout) on c_attn when transformers and peft are importable (the GPU machine), else a plain-torch GPT-2 with the
same math (pre-LayerNorm, tanh GELU, tied head, LoRA on c_attn) for a CPU smoke run. On CPU the shapes default to
the scaled-down ones `tunelab bench` uses on SwiftShader, and records say "scaled": true.

Usage: python3 bench/peer.py <step|generate|memory|attention|all> [--quick] [--json] [--iters N] [--warmup N]
       [--layers L --width C --heads NH --vocab V --positions P --batch B --seq T --rank R]
       [--prompt N --new-tokens N] [--device cuda|cpu] [--impl auto|transformers|plain] [--attn sdpa|eager]
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Same numbers as src/engine/bench/step.ts (GPT2_SMALL_STEP, SCALED_STEP) and attention.ts.
GPT2_SMALL_STEP = dict(layers=12, width=768, heads=12, vocab=50257, positions=1024, batch=8, seq=256, rank=8)
SCALED_STEP = dict(layers=2, width=64, heads=4, vocab=512, positions=256, batch=2, seq=32, rank=8)
GPT2_SMALL_ATTENTION = dict(B=8, NH=12, T=256, HS=64)
SCALED_ATTENTION = dict(B=1, NH=2, T=64, HS=16)
GENERATE_DEFAULTS = dict(prompt=16, new_tokens=128)
LEARNING_RATE = 1e-4


def sig(value, digits=4):
    """Rounds to `digits` significant digits, like the TypeScript side."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{digits - 1}e}")


# ---- device and timing ---------------------------------------------------------------------------------------------


class Device:
    def __init__(self, name):
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"
        if self.cuda:
            # fp32 means fp32: no TF32 in matmuls or convolutions.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            self.adapter = torch.cuda.get_device_name(self.torch)
        else:
            self.adapter = f"cpu ({torch.get_num_threads()} threads)"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.torch)


def time_runs(device, run, warmup, iters, gpu_events=True):
    """Median wall-clock ms of `run` from its start until the device is idle (as `tunelab bench` times a step), and
    on CUDA the median of CUDA-event ms around it."""
    for _ in range(warmup):
        run()
        device.sync()
    wall, gpu = [], []
    for _ in range(iters):
        device.sync()
        if device.cuda and gpu_events:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start = time.perf_counter()
            begin.record()
            run()
            end.record()
            device.sync()
            wall.append((time.perf_counter() - start) * 1000)
            gpu.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            run()
            device.sync()
            wall.append((time.perf_counter() - start) * 1000)
    return statistics.median(wall), min(wall), (statistics.median(gpu) if gpu else None)


# ---- models --------------------------------------------------------------------------------------------------------


def versions():
    out = {"torch": torch.__version__}
    for name in ("transformers", "peft"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def hf_available():
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def build_hf_model(c, attn):
    """GPT2LMHeadModel, random init, dropout off, with PEFT LoRA on c_attn (Conv1D: fan_in_fan_out)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=c["layers"], n_embd=c["width"], n_head=c["heads"], vocab_size=c["vocab"], n_positions=c["positions"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
        bos_token_id=c["vocab"] - 1, eos_token_id=c["vocab"] - 1, attn_implementation=attn,
    )
    model = GPT2LMHeadModel(config)
    lora = LoraConfig(r=c["rank"], lora_alpha=2 * c["rank"], lora_dropout=0.0, target_modules=["c_attn"],
                      fan_in_fan_out=True, bias="none")
    model = get_peft_model(model, lora)
    # transformers before 4.36 ignores attn_implementation (and has only the eager path).
    used = getattr(model.base_model.model.config, "_attn_implementation", "eager")
    return model, used


class PlainLoraConv1D(nn.Module):
    """y = x·W + b + (alpha/r)·(x·Aᵀ)·Bᵀ with W [in, out] frozen (GPT-2's Conv1D layout)."""

    def __init__(self, n_in, n_out, rank=0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02, requires_grad=rank == 0)
        self.bias = nn.Parameter(torch.zeros(n_out), requires_grad=rank == 0)
        self.rank = rank
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, n_in).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in)))
            self.lora_B = nn.Parameter(torch.zeros(n_out, rank))
            self.scale = 2.0  # alpha = 2r

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)
        if self.rank:
            y = y + self.scale * (x @ self.lora_A.t()) @ self.lora_B.t()
        return y


class PlainBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["width"]
        self.heads = c["heads"]
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = PlainLoraConv1D(C, 3 * C, c["rank"])
        self.attn_proj = PlainLoraConv1D(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = PlainLoraConv1D(C, 4 * C)
        self.mlp_proj = PlainLoraConv1D(4 * C, C)

    def forward(self, x, past=None):
        B, T, C = x.shape
        NH, HS = self.heads, C // self.heads
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))  # (B,NH,T,HS)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        total = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(HS)  # (B,NH,T,total)
        # Query row i sits at position total - T + i and sees keys 0..that position.
        mask = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=total - T)
        scores = scores.masked_fill(~mask, float("-inf"))
        y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, (k, v)


class PlainGpt2(nn.Module):
    """GPT-2 with LoRA on c_attn in plain torch: for machines without transformers/peft (CPU smoke runs)."""

    def __init__(self, c):
        super().__init__()
        self.wte = nn.Parameter(torch.randn(c["vocab"], c["width"]) * 0.02, requires_grad=False)
        self.wpe = nn.Parameter(torch.randn(c["positions"], c["width"]) * 0.01, requires_grad=False)
        self.blocks = nn.ModuleList(PlainBlock(c) for _ in range(c["layers"]))
        self.ln_f = nn.LayerNorm(c["width"], eps=1e-5)
        for p in self.parameters():
            p.requires_grad_(False)
        for block in self.blocks:
            block.c_attn.lora_A.requires_grad_(True)
            block.c_attn.lora_B.requires_grad_(True)

    def forward(self, ids, past=None):
        start = 0 if past is None else past[0][0].shape[2]
        x = self.wte[ids] + self.wpe[start:start + ids.shape[1]]
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if past is None else past[i])
            presents.append(present)
        return self.ln_f(x) @ self.wte.t(), presents


def build_model(c, device, impl, attn):
    torch.manual_seed(0)
    use_hf = impl == "transformers" or (impl == "auto" and hf_available())
    if use_hf:
        model, used_attn = build_hf_model(c, attn)
        model_impl = "transformers+peft"
    else:
        model, used_attn = PlainGpt2(c), "manual"
        model_impl = "plain-torch"
    return model.to(device.torch), model_impl, used_attn


def logits_of(model, ids):
    out = model(ids) if isinstance(model, PlainGpt2) else model(input_ids=ids)
    return out[0] if isinstance(model, PlainGpt2) else out.logits


def random_batch(c, seed):
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, c["vocab"], (c["batch"], c["seq"] + 1), generator=g)
    return stream[:, :-1].contiguous(), stream[:, 1:].contiguous()


# ---- benches -------------------------------------------------------------------------------------------------------


def base(device, bench, scaled, extra):
    return {"bench": bench, "impl": "pytorch", "adapter": device.adapter, "scaled": scaled, **extra}


def bench_step(device, c, counts, scaled, args, want_memory):
    start = time.perf_counter()
    model, model_impl, used_attn = build_model(c, device, args.impl, args.attn)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids_cpu, targets_cpu = random_batch(c, 4)
    build_ms = (time.perf_counter() - start) * 1000
    V = c["vocab"]
    last = {}

    def step():
        ids = ids_cpu.to(device.torch)
        targets = targets_cpu.to(device.torch)
        loss = F.cross_entropy(logits_of(model, ids).reshape(-1, V), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last["loss"] = loss.detach()

    # The first step creates AdamW's moments: build it, then measure the memory of a steady step.
    step()
    device.sync()
    if device.cuda:
        torch.cuda.reset_peak_memory_stats(device.torch)
    ms, min_ms, gpu_ms = time_runs(device, step, counts["warmup"], counts["iters"])
    info = {
        "config": {**c, "targets": ["c_attn"]},
        "ms": sig(ms), "timing": "wall-clock", "warmup": counts["warmup"], "iters": counts["iters"], "min_ms": sig(min_ms),
        "tokens_per_s": sig(c["batch"] * c["seq"] * 1000 / ms),
    }
    if gpu_ms is not None:
        info.update(gpu_ms=sig(gpu_ms), gpu_timing="cuda-event")
    info.update(
        optimizer="adamw",
        includes="batch to device + forward + backward + clip + adamw (eager)",
        loss=sig(float(last["loss"])),
        build_ms=sig(build_ms),
        model_impl=model_impl, attn_implementation=used_attn, tf32=False, dtype="float32", **versions(),
    )
    records = [base(device, "step", scaled, info)]
    if want_memory:
        mem = {"config": {**c, "targets": ["c_attn"]}}
        if device.cuda:
            mem.update(
                # Peak bytes allocated during the measured steps: activations, gradients, weights, AdamW moments.
                bytes_in_use=torch.cuda.max_memory_allocated(device.torch),
                bytes_allocated=torch.cuda.memory_reserved(device.torch),
                persistent_bytes=torch.cuda.memory_allocated(device.torch),
                model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
            )
        else:
            mem.update(available=False, reason="memory figures need CUDA (torch.cuda.max_memory_allocated)")
        records.append(base(device, "memory", scaled, mem))
    del model, optimizer
    if device.cuda:
        torch.cuda.empty_cache()
    return records


def bench_generate(device, c, counts, scaled, args):
    model, model_impl, used_attn = build_model(c, device, args.impl, args.attn)
    model.eval()
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(0, c["vocab"], (1, args.prompt), generator=g).to(device.torch)
    new_tokens = args.new_tokens
    if args.prompt + new_tokens > c["positions"]:
        raise SystemExit(f"peer.py generate: prompt {args.prompt} + {new_tokens} new tokens exceed the context {c['positions']}")
    produced = {}

    @torch.no_grad()
    def generate():
        if isinstance(model, PlainGpt2):
            logits, past = model(prompt)
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            out = [token]
            for _ in range(new_tokens - 1):
                logits, past = model(token, past)
                token = logits[:, -1].argmax(dim=-1, keepdim=True)
                out.append(token)
            produced["n"] = len(out)
        else:
            ids = model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=c["vocab"] - 1,
            )
            produced["n"] = ids.shape[1] - prompt.shape[1]

    ms, min_ms, gpu_ms = time_runs(device, generate, counts["warmup"], counts["iters"], gpu_events=False)
    if produced["n"] != new_tokens:
        raise SystemExit(f"peer.py generate: produced {produced['n']} tokens, expected {new_tokens}")
    record = base(device, "generate", scaled, {
        "config": {k: c[k] for k in ("layers", "width", "heads", "vocab", "positions")},
        "batch": 1, "prompt": args.prompt, "new_tokens": new_tokens, "lora": True,
        "ms": sig(ms), "timing": "wall-clock", "warmup": counts["warmup"], "iters": counts["iters"], "min_ms": sig(min_ms),
        "tokens_per_s": sig(new_tokens * 1000 / ms),
        "includes": "prefill + greedy decode with the KV cache" + (" (model.generate)" if model_impl != "plain-torch" else ""),
        "model_impl": model_impl, "attn_implementation": used_attn, "tf32": False, "dtype": "float32", **versions(),
    })
    del model
    if device.cuda:
        torch.cuda.empty_cache()
    return [record]


def attention_flops(s, direction):
    """Causal pairs only, as src/engine/bench/attention.ts counts them."""
    forward = 4 * s["HS"] * s["B"] * s["NH"] * s["T"] * (s["T"] + 1) / 2
    return forward if direction == "forward" else 2.5 * forward


def causal_attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return scores.softmax(dim=-1) @ v


def bench_attention(device, s, counts, scaled):
    g = torch.Generator().manual_seed(7)
    shape = (s["B"], s["NH"], s["T"], s["HS"])
    q, k, v = (torch.rand(shape, generator=g).mul_(2).sub_(1).to(device.torch).requires_grad_(True) for _ in range(3))
    dout = torch.rand(shape, generator=g).mul_(2).sub_(1).to(device.torch)
    kernel = "scaled_dot_product_attention" if hasattr(F, "scaled_dot_product_attention") else "manual softmax"
    held = {}

    def forward():
        with torch.no_grad():
            held["out"] = causal_attention(q, k, v)

    def backward():
        # PyTorch's backward needs its own graph: the forward is recorded first and only the backward is timed.
        torch.autograd.grad(held["graph"], (q, k, v), dout, retain_graph=True)

    records = []
    ms, min_ms, gpu_ms = time_runs(device, forward, counts["warmup"], counts["iters"])
    held["graph"] = causal_attention(q, k, v)
    ms_b, min_b, gpu_b = time_runs(device, backward, counts["warmup"], counts["iters"])
    for direction, wall, lo, gpu in (("forward", ms, min_ms, gpu_ms), ("backward", ms_b, min_b, gpu_b)):
        figure = gpu if gpu is not None else wall
        records.append(base(device, "attention", scaled, {
            "direction": direction, "shape": dict(s),
            "ms": sig(figure), "timing": "cuda-event" if gpu is not None else "wall-clock",
            "warmup": counts["warmup"], "iters": counts["iters"], "min_ms": sig(lo),
            "gflops": sig(attention_flops(s, direction) / (figure * 1e6)),
            "kernel": kernel, "tf32": False, "dtype": "float32",
        }))
    return records


# ---- command line --------------------------------------------------------------------------------------------------


def summarize(r):
    tag = r["bench"] + (f" {r['direction']}" if "direction" in r else "")
    if r.get("available") is False:
        return f"{tag}: unavailable — {r['reason']}"
    scaled = " [scaled-down shape]" if r.get("scaled") else ""
    if r["bench"] == "step":
        return f"{tag}: {r['ms']} ms, {r['tokens_per_s']} tokens/s, loss {r['loss']} ({r['model_impl']}){scaled}"
    if r["bench"] == "generate":
        return f"{tag}: {r['tokens_per_s']} tokens/s ({r['model_impl']}){scaled}"
    if r["bench"] == "attention":
        return f"{tag}: {r['ms']} ms, {r['gflops']} GFLOP/s ({r['timing']}){scaled}"
    if r["bench"] == "memory":
        return f"{tag}: {r['bytes_in_use'] / 2**20:.1f} MiB peak in use, {r['bytes_allocated'] / 2**20:.1f} MiB reserved{scaled}"
    return json.dumps(r)


def main(argv):
    p = argparse.ArgumentParser(description="PyTorch peer of `tunelab bench`")
    p.add_argument("what", choices=["step", "generate", "memory", "attention", "all"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="JSON lines only (no summaries on stderr)")
    p.add_argument("--iters", type=int)
    p.add_argument("--warmup", type=int)
    for key in GPT2_SMALL_STEP:
        p.add_argument(f"--{key}", type=int)
    p.add_argument("--head-size", type=int, dest="head_size", help="attention bench only")
    p.add_argument("--prompt", type=int, default=GENERATE_DEFAULTS["prompt"])
    p.add_argument("--new-tokens", type=int, dest="new_tokens", default=GENERATE_DEFAULTS["new_tokens"])
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    p.add_argument("--impl", choices=["auto", "transformers", "plain"], default="auto")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="transformers' attention implementation (default sdpa, what a user of PEFT gets)")
    args = p.parse_args(argv)

    device = Device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    slow = not device.cuda
    base_step = SCALED_STEP if slow else GPT2_SMALL_STEP
    c = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base_step.items()}
    step_scaled = c != GPT2_SMALL_STEP
    a_base = SCALED_ATTENTION if slow else GPT2_SMALL_ATTENTION
    s = {
        "B": args.batch or a_base["B"], "NH": args.heads or a_base["NH"],
        "T": args.seq or a_base["T"], "HS": args.head_size or a_base["HS"],
    }

    def counts(gpu_default):
        if slow:
            fallback = {"warmup": 1, "iters": 2 if args.quick else 3}
        elif args.quick:
            fallback = {"warmup": min(2, gpu_default["warmup"]), "iters": 5}
        else:
            fallback = gpu_default
        return {"warmup": args.warmup if args.warmup is not None else fallback["warmup"],
                "iters": args.iters if args.iters is not None else fallback["iters"]}

    def emit(records):
        for r in records:
            print(json.dumps(r), flush=True)
            if not args.json:
                print(summarize(r), file=sys.stderr, flush=True)

    if args.what in ("attention", "all"):
        emit(bench_attention(device, s, counts({"warmup": 3, "iters": 20}), s != GPT2_SMALL_ATTENTION))
    if args.what in ("step", "memory", "all"):
        records = bench_step(device, c, counts({"warmup": 3, "iters": 10}), step_scaled, args, want_memory=True)
        emit([r for r in records if args.what != "memory" or r["bench"] == "memory"])
    if args.what in ("generate", "all"):
        emit(bench_generate(device, c, counts({"warmup": 1, "iters": 5}), step_scaled, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
