"""The emulator's fast paths compute exactly the integers of its int64 paths.

Synapses run in float32 below a per-layer bound of 2**24 and in float64 above it; the
neuron update runs in float64 while no int32 wrap can occur. Each is compared here with
int64 arithmetic written out in numpy (or the emulator's own int64 path) on values placed
on both sides of the switch, where a wrong bound would show up as an off-by-one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.targets import emulator
from snncompile.targets.emulator.integer import (FAST_A_MAX, IntNeuronState, _IntSynapse,
                                                  _exact_float_dtype)


def _wrap(x: np.ndarray, bits: int) -> np.ndarray:
    return ((x + 2 ** (bits - 1)) % 2 ** bits) - 2 ** (bits - 1)


def _numpy_conv(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int64 cross-correlation, stride 1, padding 1 (the written ``conv2d(m, weight)``)."""
    n, _, h, wd = m.shape
    co, _, kh, kw = w.shape
    mp = np.pad(m, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, co, h, wd), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,oc->nohw", mp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


def _graded_messages(rng, shape, peak: int) -> np.ndarray:
    """Odd-valued messages up to ``peak`` in magnitude, ``peak`` itself included."""
    m = rng.integers(-peak, peak + 1, shape) | 1
    m.reshape(-1)[0] = peak
    return np.clip(m, -peak, peak)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_dense_float_paths_equal_int64_at_the_float32_bound(delta):
    rng = np.random.default_rng(1)
    w = rng.integers(-255, 255, (6, 40)) | 1               # odd weights: odd partial sums
    row_l1 = int(np.abs(w).sum(1).max())
    peak = (2 ** 24 + delta * row_l1) // row_l1             # bound just below / at / above 2**24
    for exp in (-3, 0, 2):
        f = fx.SynapseFixed(weight=w, weight_exp=exp, num_weight_bits=9, num_message_bits=24)
        syn = _IntSynapse(ir.Linear("fc", weight=np.zeros(w.shape), fixed=f))
        m = _graded_messages(rng, (16, 40), peak)
        expected = _wrap(np.right_shift(_wrap(m @ w.T, 32), -exp) if exp < 0
                         else np.left_shift(_wrap(m @ w.T, 32), exp), 32)
        got = syn(torch.from_numpy(m.astype(np.float64)))
        assert np.array_equal(got.to(torch.int64).numpy(), expected)
        syn.float_paths = False
        assert np.array_equal(syn(torch.from_numpy(m.astype(np.float64))).numpy(), expected)
    bound = peak * row_l1
    assert (_exact_float_dtype(bound) == torch.float32) == (bound < 2 ** 24)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_conv_float_paths_equal_int64_at_the_float32_bound(delta):
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, (4, 3, 3, 3)) | 1
    row_l1 = int(np.abs(w).reshape(4, -1).sum(1).max())
    peak = (2 ** 24 + delta * row_l1) // row_l1
    f = fx.SynapseFixed(weight=w, num_message_bits=24)
    syn = _IntSynapse(ir.Conv2d("conv", weight=np.zeros(w.shape), padding=1, fixed=f))
    m = _graded_messages(rng, (8, 3, 6, 6), peak)
    expected = _wrap(_numpy_conv(m, w), 24)
    assert np.array_equal(syn(torch.from_numpy(m.astype(np.float64))).to(torch.int64).numpy(), expected)
    syn.float_paths = False
    assert np.array_equal(syn(torch.from_numpy(m.astype(np.float64))).numpy(), expected)
    assert (_exact_float_dtype(peak * row_l1) == torch.float32) == (peak * row_l1 < 2 ** 24)


def _neuron(rng, shape, du, reset, compare):
    return ir.Neuron("n", shape=shape, fixed=fx.NeuronFixed(
        du=du, dv=rng.integers(0, 4096, shape), vth=rng.integers(1, 2 ** 17, shape),
        bias_mant=rng.integers(-4096, 4096, shape), bias_exp=6, reset_mode=reset, compare=compare,
        reset_value=0 if du == 4095 else -2 ** 22, u_init=rng.integers(-2 ** 23, 2 ** 23, shape),
        v_init=rng.integers(-2 ** 23, 2 ** 23, shape)))


@pytest.mark.parametrize("du", [-1, 4095, 7])
@pytest.mark.parametrize("compare,reset", [(">", "zero"), (">=", "subtract"), (">", "none")])
def test_neuron_fast_step_equals_int64_step(du, compare, reset):
    """Activations up to the fast path's limit (u folds, v saturates), then beyond it."""
    rng = np.random.default_rng(3)
    shape = (50,)
    node = _neuron(rng, shape, du, reset, compare)
    fast, exact = IntNeuronState(node, 16), IntNeuronState(node, 16)
    exact.fast = False
    fast_steps = 0
    for t in range(20):
        peak = FAST_A_MAX - 1 if t != 12 else 2 ** 22      # step 12 leaves the fast path
        a = torch.from_numpy(rng.integers(-peak, peak + 1, (16,) + shape).astype(np.float32))
        s_fast, s_exact = fast.step(a), exact.step(a)
        fast_steps += fast.v.dtype != torch.int64
        assert torch.equal(s_fast, s_exact)
        assert torch.equal(fast.u.to(torch.int64), exact.u) and torch.equal(fast.v.to(torch.int64), exact.v)
    assert fast_steps >= 12 and exact.v.dtype == torch.int64


@pytest.mark.slow
def test_fused_float_step_equals_int64_step():
    rng = np.random.default_rng(4)
    node = _neuron(rng, (40,), 100, "subtract", ">=")
    fused, exact = IntNeuronState(node, 8), IntNeuronState(node, 8)
    fused.fused, exact.fast = True, False
    for t in range(10):
        a = torch.from_numpy(rng.integers(-FAST_A_MAX + 1, FAST_A_MAX, (8, 40)).astype(np.float32))
        assert torch.equal(fused.step(a), exact.step(a))
        assert torch.equal(fused.v.to(torch.int64), exact.v) and torch.equal(fused.u.to(torch.int64), exact.u)


def test_static_input_reuses_the_first_layer_with_the_same_integers():
    """A static image (N, *shape) gives the outputs of the same image repeated T times."""
    rng = np.random.default_rng(5)
    g = Graph("static", timesteps=6)
    g.add(ir.Input("in", shape=(2, 8, 8)))
    g.add(ir.Conv2d("conv", weight=rng.normal(0.2, 0.5, (4, 2, 3, 3)), padding=1), ["in"])
    g.add(ir.Neuron("lif", shape=(4, 8, 8), dv=0.2, threshold=1.0), ["conv"])
    g.add(ir.Flatten("flat"), ["lif"])
    g.add(ir.Linear("fc", weight=rng.normal(0.1, 0.3, (5, 256))), ["flat"])
    g.add(ir.Neuron("out_lif", shape=(5,), dv=0.1, threshold=1.0), ["fc"])
    g.add(ir.Output("out", mode="spikes"), ["out_lif"])
    x = rng.random((7, 2, 8, 8)) * 2
    static = emulator.run(g, x, precision="fixed", record=True)
    repeated = emulator.run(g, np.repeat(x[:, None], 6, axis=1), precision="fixed", record=True)
    assert np.array_equal(static.outputs, repeated.outputs) and static.outputs.sum() > 0
    for name, counts in repeated.layer_counts.items():
        assert np.array_equal(static.layer_counts[name], counts), name


@pytest.mark.parametrize("kernel,stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))])
def test_max_pool_without_padding_equals_torch(kernel, stride):
    from snncompile.targets.emulator.integer import max_pool
    m = torch.from_numpy(np.random.default_rng(6).integers(-2 ** 20, 2 ** 20, (3, 4, 11, 9))).to(torch.float32)
    assert torch.equal(max_pool(m, kernel, stride, (0, 0)), torch.nn.functional.max_pool2d(m, kernel, stride))
