# PyTorch baseline of `deno task bench train`: same weights, rows, batch and AdamW settings; prints tokens/s and losses.
"""Train a Llama-family model for a few AdamW steps in PyTorch, the way bench/train.ts does.

Inputs (written by bench/train.ts, or by hand):
  --model DIR   a Hugging Face directory: config.json + model.safetensors (or sharded with
                model.safetensors.index.json), F32/BF16/F16 tensors
  --rows FILE   little-endian int32 token ids, shape (steps, batch, seq): step s trains on rows[s]
Every row is one contiguous chunk of text with labels = ids (no padding, no packing), so the
loss is Hugging Face's: mean cross-entropy of the next token over batch x (seq - 1) positions.

Two implementations of the same math:
  plain  a Llama in plain torch mirroring transformers' LlamaForCausalLM (eager attention,
         fp32 softmax); works with Debian's python3-torch 1.13 and nothing else
  hf     transformers' LlamaForCausalLM / AutoModelForCausalLM (when importable)
--impl auto picks hf on CUDA when transformers imports, plain otherwise.

Precision: fp32 (TF32 off, eager attention) or bf16 (torch.autocast bfloat16 with fp32 master
weights and fp32 AdamW; hf uses sdpa attention).

Output: one JSON object (--out FILE, and the last stdout line): per-step losses, grad norms and
wall times, tokens/s over the timed steps, peak memory, device and library versions.
"""

import argparse
import json
import math
import os
import platform
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# Weights: safetensors parsed by hand (8-byte header length, JSON header, raw little-endian data)

_DTYPES = {"F32": ("<f4", 4), "BF16": ("<u2", 2), "F16": ("<f2", 2)}


def read_safetensors(path):
    """Every tensor of one .safetensors file as float32 numpy arrays, by name."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise SystemExit(f"error: {path}: tensor {name} has dtype {dt} (expected F32, BF16, F16)")
        np_dt, size = _DTYPES[dt]
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np_dt, count=(b - a) // size, offset=a)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float32).reshape(info["shape"])
    return out


def read_weights(model_dir):
    """All tensors of an HF directory (single file or sharded)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        out.update(read_safetensors(os.path.join(model_dir, fn)))
    return out


# --------------------------------------------------------------------------------------------
# Config (the fields transformers' Llama/Mistral/Qwen2/Granite read)


class Cfg:
    def __init__(self, raw):
        self.raw = raw
        self.V = raw["vocab_size"]
        self.C = raw["hidden_size"]
        self.I = raw["intermediate_size"]
        self.L = raw["num_hidden_layers"]
        self.Hq = raw["num_attention_heads"]
        self.Hkv = raw.get("num_key_value_heads") or self.Hq
        self.D = raw.get("head_dim") or self.C // self.Hq
        self.eps = raw.get("rms_norm_eps", 1e-6)
        self.theta = raw.get("rope_theta", 10000.0)
        self.rope_scaling = raw.get("rope_scaling")
        self.tied = raw.get("tie_word_embeddings", False)
        arch = (raw.get("architectures") or [""])[0]
        mt = raw.get("model_type", "")
        qwen2 = arch.startswith("Qwen2") or mt == "qwen2"
        self.qkv_bias = qwen2 or bool(raw.get("attention_bias", False))
        self.o_bias = (not qwen2) and bool(raw.get("attention_bias", False))
        granite = arch.startswith("Granite") or mt == "granite"
        self.emb_mult = raw.get("embedding_multiplier", 1.0) if granite else 1.0
        self.res_mult = raw.get("residual_multiplier", 1.0) if granite else 1.0
        self.logits_scaling = raw.get("logits_scaling", 1.0) if granite else 1.0
        self.scale = raw.get("attention_multiplier") if granite else None
        if self.scale is None:
            self.scale = 1.0 / math.sqrt(self.D)
        self.sliding_window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None


def rope_inv_freq(cfg):
    """transformers' default / llama3 RoPE inverse frequencies (float32)."""
    D = cfg.D
    inv = 1.0 / (cfg.theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    rs = cfg.rope_scaling
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        is_med = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(is_med, smoothed, inv_l)
    elif rs:
        raise SystemExit(f"error: rope_scaling {rs} is not supported by the plain implementation")
    return inv


# --------------------------------------------------------------------------------------------
# The plain implementation (mirrors transformers' modeling_llama, eager attention)


class RMSNorm(torch.nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.q_proj = torch.nn.Linear(cfg.C, cfg.Hq * cfg.D, bias=cfg.qkv_bias)
        self.k_proj = torch.nn.Linear(cfg.C, cfg.Hkv * cfg.D, bias=cfg.qkv_bias)
        self.v_proj = torch.nn.Linear(cfg.C, cfg.Hkv * cfg.D, bias=cfg.qkv_bias)
        self.o_proj = torch.nn.Linear(cfg.Hq * cfg.D, cfg.C, bias=cfg.o_bias)

    def forward(self, x, cos, sin, mask):
        c = self.cfg
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, c.Hq, c.D).transpose(1, 2)
        k = self.k_proj(x).view(B, S, c.Hkv, c.D).transpose(1, 2)
        v = self.v_proj(x).view(B, S, c.Hkv, c.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = c.Hq // c.Hkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * c.scale + mask
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(B, S, c.Hq * c.D)
        return self.o_proj(o)


class Mlp(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = torch.nn.Linear(cfg.C, cfg.I, bias=False)
        self.up_proj = torch.nn.Linear(cfg.C, cfg.I, bias=False)
        self.down_proj = torch.nn.Linear(cfg.I, cfg.C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.res_mult = cfg.res_mult
        self.input_layernorm = RMSNorm(cfg.C, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.C, cfg.eps)
        self.mlp = Mlp(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask) * self.res_mult
        return x + self.mlp(self.post_attention_layernorm(x)) * self.res_mult


class Body(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(cfg.V, cfg.C)
        self.layers = torch.nn.ModuleList([Layer(cfg) for _ in range(cfg.L)])
        self.norm = RMSNorm(cfg.C, cfg.eps)


class PlainLlama(torch.nn.Module):
    """LlamaForCausalLM's math; parameter names are the HF checkpoint names."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.lm_head = torch.nn.Linear(cfg.C, cfg.V, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def forward(self, ids, labels):
        c = self.cfg
        B, S = ids.shape
        x = self.model.embed_tokens(ids) * c.emb_mult
        pos = torch.arange(S, device=ids.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float())
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        i = torch.arange(S, device=ids.device)
        allowed = i[None, :] <= i[:, None]
        if c.sliding_window is not None:
            allowed = allowed & (i[:, None] - i[None, :] < c.sliding_window)
        mask = torch.zeros(S, S, device=ids.device, dtype=x.dtype)
        mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        logits = self.lm_head(self.model.norm(x)).float() / c.logits_scaling
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, c.V), labels[:, 1:].reshape(-1), ignore_index=-100
        )


def load_plain(model_dir, cfg, device):
    model = PlainLlama(cfg)
    tensors = read_weights(model_dir)
    state = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tied:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"error: weights do not match config: missing {missing}, unexpected {unexpected}")
    return model.to(device)


def load_hf(model_dir, dtype_name, device):
    from transformers import AutoModelForCausalLM  # noqa: import only when used

    attn = "eager" if dtype_name == "fp32" else "sdpa"
    try:  # transformers >= 4.56 names it `dtype`; older releases only know `torch_dtype`
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation=attn)
    return model.to(device)


# --------------------------------------------------------------------------------------------


def peak_memory_bytes(device):
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux: the process's peak resident memory (weights, state, activations).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True, help="total optimizer steps (warm-up included)")
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--impl", choices=["auto", "plain", "hf"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", help="write the JSON result here too")
    a = ap.parse_args()

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(a.device)
    if device.type == "cpu" and a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    impl = a.impl
    if impl == "auto":
        impl = "plain"
        if device.type == "cuda":
            try:
                import transformers  # noqa: F401

                impl = "hf"
            except ImportError:
                pass
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = Cfg(json.load(f))
    if cfg.sliding_window is not None and cfg.sliding_window >= a.seq:
        cfg.sliding_window = None  # the window covers every row: full causal attention
    model = load_plain(a.model, cfg, device) if impl == "plain" else load_hf(a.model, a.dtype, device)
    model.train()

    rows = np.fromfile(a.rows, dtype="<i4")
    need = a.steps * a.batch * a.seq
    if rows.size < need:
        raise SystemExit(f"error: {a.rows} holds {rows.size} ids, {need} needed")
    rows = torch.from_numpy(rows[:need].astype(np.int64).reshape(a.steps, a.batch, a.seq))

    opt = torch.optim.AdamW(
        model.parameters(),
        lr=a.lr,
        betas=(a.beta1, a.beta2),
        eps=a.eps,
        weight_decay=a.weight_decay,
    )
    use_bf16 = a.dtype == "bf16"

    def loss_of(ids):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if impl == "plain":
                return model(ids, ids)
            return model(input_ids=ids, labels=ids).loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    losses, norms, step_ms = [], [], []
    t_timed = None
    for s in range(a.steps):
        if s == a.warmup:
            sync()
            t_timed = time.perf_counter()
        t0 = time.perf_counter()
        ids = rows[s].to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        loss = loss_of(ids)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        opt.step()
        losses.append(loss.detach())
        norms.append(norm.detach())
        if device.type == "cpu":
            step_ms.append((time.perf_counter() - t0) * 1000)
    sync()
    timed_steps = a.steps - a.warmup
    total_s = time.perf_counter() - t_timed if t_timed is not None else float("nan")
    tokens = timed_steps * a.batch * a.seq
    result = {
        "impl": impl,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": a.dtype,
        "threads": threads if device.type == "cpu" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch": a.batch,
        "seq": a.seq,
        "steps": a.steps,
        "warmup": a.warmup,
        "losses": [float(x) for x in losses],
        "grad_norms": [float(x) for x in norms],
        "step_ms": step_ms,
        "timed_step_ms": total_s * 1000 / timed_steps if timed_steps > 0 else None,
        "tokens_per_s": tokens / total_s if timed_steps > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(device),
        "params": sum(p.numel() for p in model.parameters()),
    }
    text = json.dumps(result)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
