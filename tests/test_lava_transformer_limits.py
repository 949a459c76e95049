"""Random small product / mask / reduction graphs at the integer limits: the emulator (torch
engine) == Lava fixed_pt (issue 12), with integers at the 24-bit wrap of the accumulators and
at the saturation of the neuron voltage. Each example is one Lava run of a few samples."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.targets import emulator

pytestmark = [pytest.mark.lava, pytest.mark.slow]
LIMIT = 2 ** 23
T = 2
_int24 = st.integers(-LIMIT, LIMIT - 1)
_edges = st.sampled_from([-LIMIT, -LIMIT + 1, -1, 0, 1, LIMIT - 2, LIMIT - 1])
#: Few examples (each is a Lava run of a few seconds), no shrinking (minutes of Lava runs).
EXAMPLES = settings(max_examples=5, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])


def _values(n):
    return st.lists(st.one_of(_int24, _edges), min_size=n, max_size=n)


def _lava_fixed(g, x):
    from snncompile.targets import lava
    return lava.run(g, x, precision="fixed")


def _graph(shape, make, bits=24, readout="potential"):
    g = Graph("limits", timesteps=T)
    g.add(ir.Input("in", shape=shape, fixed=fx.InputFixed(scale=1.0, num_message_bits=bits)))
    last = make(g)
    g.add(ir.Output("out", mode=readout, fixed=fx.ReadoutFixed(mode=readout)), [last])
    return g.validate()


def _scale(name, shape, mant, exp, bias, bits=24):
    return ir.Scale(name, weight=np.ones(shape), fixed=fx.SynapseFixed(
        weight=np.full(shape, mant), weight_exp=exp, num_message_bits=bits, bias=np.array(bias)))


def _same(g, x):
    em = emulator.run(g, x, precision="fixed", engine="torch")
    lv = _lava_fixed(g, x)
    assert lv.outputs.dtype.kind == "i"
    assert np.array_equal(lv.outputs, em.outputs), f"{int(np.sum(lv.outputs != em.outputs))} output mismatches"
    return em.outputs


def _with_extremes(vals, shape):
    """Samples: all at the top of the 24-bit range, all at the bottom, then the drawn values."""
    drawn = np.array(vals, dtype=np.float64).reshape((1,) + shape)
    return np.concatenate([np.full((1,) + shape, LIMIT - 1.0), np.full((1,) + shape, -LIMIT), drawn])


@EXAMPLES
@given(_values(T * 2 * 3 * 3), st.integers(-255, 255), st.integers(fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX),
       _int24)
def test_matmul_and_mul_at_the_wrap(vals, mant, exp, bias):
    """a @ b and a * b^T (a broadcast Mul) of 24-bit graded values wrap in the 24-bit accumulator;
    their Add wraps at 32 bits; a Scale with a weight exponent and a bias wraps again."""
    x = _with_extremes(vals, (T, 2, 3, 3))

    def make(g):
        g.add(ir.Slice("a", axis=0, start=0, stop=1), ["in"])
        g.add(ir.Slice("b", axis=0, start=1, stop=2), ["in"])
        g.add(ir.MatMul("ab", lhs="real", rhs="real"), ["a", "b"])
        g.add(ir.Permute("bt", perm=(0, 2, 1)), ["b"])
        g.add(ir.Slice("bt_col", axis=2, start=0, stop=1), ["bt"])     # (1, 3, 1): broadcast over columns
        g.add(ir.Mul("a_bt", lhs="real", rhs="real"), ["a", "bt_col"])
        g.add(ir.Add("sum"), ["ab", "a_bt"])
        g.add(_scale("sc", (1, 3, 3), mant, exp, bias), ["sum"])
        return "sc"
    _same(_graph((2, 3, 3), make), x)
    exact = np.einsum("snij,snjk->snik", x[:, :, 0], x[:, :, 1])
    assert np.any(np.abs(exact) >= LIMIT), "the products reach the 24-bit wrap"


@EXAMPLES
@given(st.integers(0, 2 ** 32 - 1), st.floats(0.2, 0.8), st.integers(0, 2))
def test_spike_masks_and_popcounts(seed, p, axis):
    """AND of two spike trains with a broadcast operand (Lava's Sparse + LIF), then the popcount
    over an axis (Lava's Sparse of ones), then a graded sum of that (our Accumulate)."""
    x = (np.random.default_rng(seed).random((3, T, 4, 5, 6)) < p).astype(np.float64)

    def make(g):
        g.add(ir.Slice("q", axis=0, start=0, stop=2), ["in"])             # (2, 5, 6)
        g.add(ir.Slice("k", axis=0, start=2, stop=4), ["in"])
        g.add(ir.Mul("qk", lhs="spike", rhs="spike"), ["q", "k"])
        g.add(ir.Slice("k_row", axis=1, start=0, stop=1), ["k"])          # spikes (2, 1, 6)
        g.add(ir.Mul("mask", lhs="spike", rhs="spike"), ["qk", "k_row"])  # broadcast over tokens
        g.add(ir.ReduceSum("pop", axis=axis, keepdim=True), ["mask"])
        if axis == 1:
            g.add(ir.ReduceSum("k_any", axis=1, keepdim=True), ["k"])     # counts (2, 1, 6)
            g.add(ir.Mul("gate", lhs="count", rhs="count"), ["pop", "k_any"])
        else:   # a product of a value with itself: both operand ports read the same producer
            g.add(ir.Slice("pop2", axis=0, start=0, stop=1 if axis == 0 else 2), ["pop"])
            g.add(ir.Mul("gate", lhs="count", rhs="count"), ["pop", "pop2"])
        g.add(ir.ReduceSum("total", axis=-1), ["gate"])
        shape = {0: (1, 5), 1: (2, 1), 2: (2, 5)}[axis]
        g.add(_scale("sc", shape, 1, 0, 0), ["total"])
        return "sc"
    g = _graph((4, 5, 6), make, bits=0)
    out = _same(g, x)
    assert np.any(out > 0)


@EXAMPLES
@given(_values(T * 3 * 5), st.sampled_from([0, 1, -1]), st.integers(-1, 4095), st.integers(0, 4095),
       st.integers(fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX))
def test_graded_sums_into_a_saturating_membrane(vals, axis, du, dv, exp):
    """A graded ReduceSum (24-bit wrap) through a layout into a leaky integrator whose current
    wraps at 24 bits and whose voltage saturates at 2**23 - 1 (a membrane readout)."""
    x = _with_extremes(vals, (T, 3, 5))

    def make(g):
        g.add(ir.Permute("p", perm=(1, 0)), ["in"])
        g.add(ir.ReduceSum("s", axis=axis, keepdim=False), ["p"])
        shape = (3,) if axis == 0 else (5,)
        g.add(_scale("sc", shape, 255, exp, 0), ["s"])
        g.add(ir.Neuron("li", shape=shape, threshold=np.inf, reset_mode="none", reset_amount=0.0, fixed=fx.NeuronFixed(
            du=du, dv=dv, vth=fx.VTH_MAX, reset_mode="none")), ["sc"])
        return "li"
    out = _same(_graph((3, 5), make, readout="membrane"), x)
    assert np.any(out[:2] != 0)


def test_the_membrane_saturates_identically():
    """A current of 3 * 255 << 7 (<< 6 into u: 6.3 M) each step into a non-leaky voltage: it
    passes 2**23 at the second step and sits at 2**23 - 1 in both (positive and negative)."""
    x = np.stack([np.ones((T, 3, 5)), -np.ones((T, 3, 5))])

    def make(g):
        g.add(ir.ReduceSum("s", axis=0), ["in"])
        g.add(_scale("sc", (5,), 255, 7, 0), ["s"])
        g.add(ir.Neuron("li", shape=(5,), threshold=np.inf, reset_mode="none", reset_amount=0.0, fixed=fx.NeuronFixed(
            du=4095, dv=0, vth=fx.VTH_MAX, reset_mode="none")), ["sc"])
        return "li"
    out = _same(_graph((3, 5), make, readout="membrane"), x)
    assert np.all(out[0, -1] == LIMIT - 1) and np.all(out[1, -1] == -(LIMIT - 1))


@st.composite
def _product_graphs(draw):
    """A random small graph: two operands sliced from the input (spikes or 24-bit graded values),
    optionally re-indexed, a MatMul or a broadcast Mul, optionally a sum over a random axis, and a
    Scale into a potential readout."""
    h, n, k = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spikes = draw(st.booleans())
    op = draw(st.sampled_from(["matmul", "mul"]))
    transpose = draw(st.booleans())
    reduce_axis = draw(st.sampled_from([None, 0, 1, 2]))
    mant = draw(st.integers(-255, 255))
    exp = draw(st.integers(fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    kind = "spike" if spikes else "real"
    shape = (2 * h, n, k)

    def make(g):
        g.add(ir.Slice("a", axis=0, start=0, stop=h), ["in"])                # (h, n, k)
        g.add(ir.Slice("b0", axis=0, start=h, stop=2 * h), ["in"])
        if op == "matmul":                                                    # (h, n, k) @ (h, k, n)
            g.add(ir.Permute("b", perm=(0, 2, 1)), ["b0"])
            g.add(ir.MatMul("p", lhs=kind, rhs=kind), ["a", "b"])
        else:                                                                 # (h, n, k) * (h, 1, k)
            g.add(ir.Permute("bt", perm=(0, 2, 1)) if transpose else ir.Reshape("bt", shape=(h, n, k)), ["b0"])
            src = "bt"
            if transpose:
                g.add(ir.Permute("bb", perm=(0, 2, 1)), ["bt"])
                src = "bb"
            g.add(ir.Slice("b", axis=1, start=0, stop=1), [src])
            g.add(ir.Mul("p", lhs=kind, rhs=kind), ["a", "b"])
        last = "p"
        if reduce_axis is not None:
            g.add(ir.ReduceSum("r", axis=reduce_axis, keepdim=True), ["p"])
            last = "r"
        return last
    return shape, make, spikes, mant, exp, seed


@settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(_product_graphs())
def test_random_product_graphs(case):
    shape, make, spikes, mant, exp, seed = case
    rng = np.random.default_rng(seed)
    if spikes:
        x = (rng.random((3, T) + shape) < 0.5).astype(np.float64)
    else:
        x = rng.integers(-LIMIT, LIMIT, (3, T) + shape).astype(np.float64)
        x[0] = LIMIT - 1                                     # one sample at each end of the range
        x[1] = -LIMIT

    def with_scale(g):
        last = make(g)
        g.add(_scale("sc", (1,), mant, exp, 0), [last])
        return "sc"
    _same(_graph(shape, with_scale, bits=0 if spikes else 24), x)
