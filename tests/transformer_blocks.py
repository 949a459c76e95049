"""Hand-built spiking-transformer attention blocks (per-sample shapes, token layout (C, N, 1) as the
frontend's): Spikformer SSA, SDT SDSA, SpikingResformer DSSA and a membrane shortcut, shared by the
fixed-point and the Lava transformer tests."""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes import mark_operands

T = 4


# -- hand-built attention blocks (per-sample shapes, token layout (C, N, 1) as the frontend's) --

def _lif(name, shape, th=1.0):
    """SpikingJelly LIF(tau=2, decay_input): dv = 0.5, the 1/tau gain folded before it."""
    return ir.Neuron(name, shape=shape, du=1.0, dv=0.5, threshold=th)


def _conv(name, cin, cout, rng, gain, k=1):
    w = rng.normal(0, gain / np.sqrt(cin * k * k), (cout, cin, k, k))
    return ir.Conv2d(name, weight=w, bias=rng.normal(0.05, 0.1, cout), stride=k)


def ssa(C=16, N=24, h=2, seed=0):
    """Spikformer SSA: q, k, v LIF -> heads -> q @ k^T (counts <= d) -> * 0.0625 (0.125 and the
    LIF's 1/tau) -> @ v -> tokens -> attn_lif (0.5) -> proj."""
    rng = np.random.default_rng(seed)
    d = C // h
    g = Graph("ssa", timesteps=T)
    g.add(ir.Input("in", shape=(C, N, 1)))
    for p in "qkv":
        g.add(_conv(f"{p}_conv", C, C, rng, 3.5), ["in"])
        g.add(_lif(f"{p}_lif", (C, N, 1)), [f"{p}_conv"])
        g.add(ir.Reshape(f"{p}_heads", shape=(h, d, N)), [f"{p}_lif"])
    g.add(ir.Permute("q_t", perm=(0, 2, 1)), ["q_heads"])
    g.add(ir.Permute("v_t", perm=(0, 2, 1)), ["v_heads"])
    g.add(ir.MatMul("qk"), ["q_t", "k_heads"])
    g.add(ir.Scale("attn_scale", weight=np.array(0.0625)), ["qk"])
    g.add(ir.MatMul("attn_v"), ["attn_scale", "v_t"])
    g.add(ir.Permute("x_t", perm=(0, 2, 1)), ["attn_v"])
    g.add(ir.Reshape("x_tokens", shape=(C, N, 1)), ["x_t"])
    g.add(_lif("attn_lif", (C, N, 1), th=0.5), ["x_tokens"])
    g.add(_conv("proj_conv", C, C, rng, 6.0), ["attn_lif"])
    g.add(_lif("proj_lif", (C, N, 1)), ["proj_conv"])
    g.add(ir.Output("out"), ["proj_lif"])
    return mark_operands(g.validate())


def sdt(C=16, H=4, W=4, h=2, seed=0):
    """SDT v1 SDSA: k AND v -> sum over tokens (popcount) -> talking_heads_lif (0.5) ->
    q AND kv (broadcast over tokens) -> proj conv -> membrane readout."""
    rng = np.random.default_rng(seed)
    d, N = C // h, H * W
    g = Graph("sdt", timesteps=T)
    g.add(ir.Input("in", shape=(C, H, W)))
    for p in "qkv":
        g.add(_conv(f"{p}_conv", C, C, rng, 2.5), ["in"])
        g.add(_lif(f"{p}_lif", (C, H, W)), [f"{p}_conv"])
        g.add(ir.Reshape(f"{p}_heads", shape=(h, d, N)), [f"{p}_lif"])
        g.add(ir.Permute(f"{p}_t", perm=(0, 2, 1)), [f"{p}_heads"])
    g.add(ir.Mul("kv"), ["k_t", "v_t"])
    g.add(ir.ReduceSum("kv_sum", axis=1, keepdim=True), ["kv"])
    g.add(_lif("talking_heads_lif", (h, 1, d), th=0.5), ["kv_sum"])
    g.add(ir.Mul("q_kv"), ["q_t", "talking_heads_lif"])
    g.add(ir.Permute("x_t", perm=(0, 2, 1)), ["q_kv"])
    g.add(ir.Reshape("x_map", shape=(C, H, W)), ["x_t"])
    g.add(_conv("proj_conv", C, C, rng, 2.5), ["x_map"])
    g.add(ir.Output("out", mode="potential"), ["proj_conv"])
    return mark_operands(g.validate())


def srf(C=8, H=4, W=4, h=2, p=2, seed=0):
    """SpikingResformer DSSA: y = BN(W x) (patch conv, real, with a bias) -> heads, y1/y2 slices;
    (y1^T @ x) * scale1 (per head) -> LIF; (y2 @ attn) * scale2 -> LIF -> proj."""
    rng = np.random.default_rng(seed)
    d, HW, L = C // h, H * W, (H // p) * (W // p)
    g = Graph("srf", timesteps=T)
    g.add(ir.Input("in", shape=(C, H, W)))
    g.add(_conv("x_conv", C, C, rng, 2.5), ["in"])
    g.add(_lif("x_lif", (C, H, W)), ["x_conv"])
    g.add(ir.Reshape("x_heads", shape=(h, d, HW)), ["x_lif"])
    g.add(_conv("W", C, 2 * C, rng, 2.0, k=p), ["x_lif"])
    g.add(ir.Reshape("y_heads", shape=(h, 2 * d, L)), ["W"])
    g.add(ir.Slice("y1", axis=1, start=0, stop=d), ["y_heads"])
    g.add(ir.Slice("y2", axis=1, start=d, stop=2 * d), ["y_heads"])
    g.add(ir.Permute("y1_t", perm=(0, 2, 1)), ["y1"])
    g.add(ir.MatMul("attn_mm"), ["y1_t", "x_heads"])
    g.add(ir.Scale("scale1", weight=np.array([0.9, 0.7]).reshape(h, 1, 1)), ["attn_mm"])
    g.add(_lif("attn_lif", (h, L, HW), th=0.5), ["scale1"])
    g.add(ir.MatMul("out_mm"), ["y2", "attn_lif"])
    g.add(ir.Scale("scale2", weight=np.array([2.5, 2.0]).reshape(h, 1, 1)), ["out_mm"])
    g.add(_lif("out_lif", (h, d, HW)), ["scale2"])
    g.add(ir.Reshape("out_map", shape=(C, H, W)), ["out_lif"])
    g.add(_conv("proj", C, C, rng, 2.0), ["out_map"])
    g.add(ir.Output("out", mode="potential"), ["proj"])
    return mark_operands(g.validate())


def shortcut(C=6, H=6, seed=0):
    """SpikingResformer's prologue shortcut: a 3x3 conv on the graded image feeds its LIF and,
    as a membrane shortcut, an Add with a spike-fed 1x1 conv; the sum reaches the next LIF
    through the 1/tau channel gain. One scale for both streams leaves the image conv no weight
    bit; the quantizer realigns each stream with a Scale that has a weight exponent."""
    rng = np.random.default_rng(seed)
    g = Graph("shortcut", timesteps=T)
    g.add(ir.Input("in", shape=(3, H, H)))
    g.add(ir.Conv2d("stem", weight=rng.normal(0, 0.25, (C, 3, 3, 3)), bias=rng.normal(0.1, 0.1, C),
                    padding=1), ["in"])
    g.add(ir.Conv2d("stem_gain", weight=np.full((C, 1, 1, 1), 0.5), bias=np.zeros(C), groups=C), ["stem"])
    g.add(_lif("stem_lif", (C, H, H), th=0.5), ["stem_gain"])
    g.add(_conv("proj", C, C, rng, 2.0), ["stem_lif"])
    g.add(ir.Add("add"), ["proj", "stem"])
    g.add(ir.Conv2d("gain", weight=np.full((C, 1, 1, 1), 0.5), bias=np.zeros(C), groups=C), ["add"])
    g.add(ir.Neuron("out_lif", shape=(C, H, H), du=1.0, dv=0.5, threshold=0.5), ["gain"])
    g.add(ir.Reshape("tokens", shape=(C, H * H, 1)), ["out_lif"])
    g.add(ir.Output("out"), ["tokens"])
    return mark_operands(g.validate())


def _images(shape, n=24, seed=1):
    return np.random.default_rng(seed).random((n, T) + tuple(shape))


BLOCKS = {"ssa": ssa, "sdt": sdt, "srf": srf, "shortcut": shortcut}


def spikes(shape, n=24, p=0.3, seed=1):
    return (np.random.default_rng(seed).random((n, T) + tuple(shape)) < p).astype(np.float64)
