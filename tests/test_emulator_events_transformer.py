"""The event engine's layouts of the spiking-transformer kinds, at the 24-bit limits.

Products with spike operands take the event engine's own paths (``events.py``): two spike
operands AND + popcount over packed bit rows (one and two 64-bit words per row), one spike
operand the sums of the values it selects, graded operands a dense integer product; each must
give ``ir.fixed``'s integers (numpy, int64 here) and the torch engine's, with the graded
operand anywhere in the 24-bit range (sums that wrap). The zoo families are compared engine
against engine in ``test_fixed_transformer.py`` (``test_zoo_transformer_runs_in_fixed_point``).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.targets.emulator import event_kernel as K
from snncompile.targets.emulator.events import build_program, run_program
from snncompile.targets.emulator.integer import IntegerSimulator
from snncompile.targets.reference import simulate

LIMIT = 2 ** 23
_edges = st.sampled_from([-LIMIT, -LIMIT + 1, -1, 0, 1, LIMIT - 2, LIMIT - 1])
_graded = st.one_of(st.integers(-LIMIT, LIMIT - 1), _edges)


def _wrap(x):
    return ((x + LIMIT) % (2 * LIMIT)) - LIMIT


def _pass_spikes(g, name, src):
    """A LIF that fires exactly where its 0/1 input is 1 (u = 64 m, v = u, threshold 0)."""
    g.add(ir.Neuron(name, shape=g.shape(src), fixed=fx.NeuronFixed(du=4095, dv=4095, vth=0)), [src])
    return name


def _graph(r, c, lhs, rhs, product):
    """Input (2, r, c) of graded 24-bit messages; half 0 and half 1 become the operands, spikes
    (through a LIF) or graded as they are; the right one transposed for a MatMul."""
    g = Graph("limits", timesteps=1)
    g.add(ir.Input("in", shape=(2, r, c), fixed=fx.InputFixed(scale=1.0, num_message_bits=24)))
    g.add(ir.Slice("a0", axis=0, start=0, stop=1), ["in"])
    g.add(ir.Slice("b0", axis=0, start=1, stop=2), ["in"])
    a = _pass_spikes(g, "a", "a0") if lhs == "spike" else "a0"
    b = _pass_spikes(g, "b", "b0") if rhs == "spike" else "b0"
    if product == "matmul":
        g.add(ir.Permute("b_t", perm=(0, 2, 1)), [b])
        g.add(ir.MatMul("p", lhs=lhs, rhs=rhs), [a, "b_t"])
    else:                                       # a (1, r, c) * b's first row (1, 1, c), broadcast
        g.add(ir.Slice("b_row", axis=1, start=0, stop=1), [b])
        g.add(ir.Mul("p", lhs=lhs, rhs=rhs), [a, "b_row"])
    g.add(ir.ReduceSum("sum", axis=1, keepdim=True), ["p"])
    g.add(ir.Output("out", mode="potential", fixed=fx.ReadoutFixed(mode="potential")), ["sum"])
    return g.validate()


def _both_engines(g, x):
    xs = np.asarray(x, np.float64).reshape((1, 1) + tuple(g.input.shape))
    prog = build_program(g, record=True)
    events, counts, _ = run_program(prog, xs, 1)
    torch_, t_counts, _ = simulate(g, xs, 1, record=True, simulator=IntegerSimulator)
    assert np.array_equal(events, torch_)
    for name in t_counts:
        assert np.array_equal(counts[name], t_counts[name]), name
    # one step: a node's recorded count is its value; the readout is the ReduceSum's
    p = counts["p"].reshape(-1).astype(np.int64) if "p" in counts else None
    return prog, p, events.reshape(-1).astype(np.int64)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.sampled_from([(3, 4), (2, 70)]), st.sampled_from(["spike", "real"]), st.sampled_from(["spike", "real"]),
       st.data())
def test_matmul_on_the_event_engine_at_the_limits(shape, lhs, rhs, data):
    r, c = shape
    draw = {"spike": st.integers(0, 1), "real": _graded}
    a = np.array(data.draw(st.lists(draw[lhs], min_size=r * c, max_size=r * c)), np.int64).reshape(r, c)
    b = np.array(data.draw(st.lists(draw[rhs], min_size=r * c, max_size=r * c)), np.int64).reshape(r, c)
    g = _graph(r, c, lhs, rhs, "matmul")
    prog, out, sums = _both_engines(g, np.stack([a, b]))
    exact = _wrap(a @ b.T)                       # |a @ b.T| < 70 * 2**46: exact in int64
    assert np.array_equal(out, exact.reshape(-1))
    assert np.array_equal(sums, _wrap(exact.sum(0)))
    mode = prog.ops[prog.ops[:, K.KIND] == K.MATMUL][0, K.A0]
    assert mode == {("spike", "spike"): K.MM_POPCOUNT, ("real", "real"): K.MM_DENSE}.get((lhs, rhs), K.MM_EVENTS)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.sampled_from(["spike", "real"]), st.sampled_from(["spike", "real"]), st.data())
def test_mul_and_reduce_sum_on_the_event_engine_at_the_limits(lhs, rhs, data):
    r, c = 3, 5
    draw = {"spike": st.integers(0, 1), "real": _graded}
    a = np.array(data.draw(st.lists(draw[lhs], min_size=r * c, max_size=r * c)), np.int64).reshape(r, c)
    b = np.array(data.draw(st.lists(draw[rhs], min_size=r * c, max_size=r * c)), np.int64).reshape(r, c)
    _, out, sums = _both_engines(_graph(r, c, lhs, rhs, "mul"), np.stack([a, b]))
    exact = _wrap(a * b[:1])
    assert np.array_equal(out, exact.reshape(-1))
    assert np.array_equal(sums, _wrap(exact.sum(0)))


def test_the_spike_paths_really_are_taken_and_fire():
    """A popcount with two words per row (K = 70), half the inputs spiking: the counts are the
    coincidences (no wrap), and the LIF that passes spikes fires where its input is 1."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((2, 2, 70)) < 0.5).astype(np.int64)
    g = _graph(2, 70, "spike", "spike", "matmul")
    _, out, _ = _both_engines(g, np.stack([a, b]))
    assert np.array_equal(out, (a @ b.T).reshape(-1)) and out.min() > 5
    xs = np.stack([a, b]).astype(np.float64)[None, None]
    _, counts, _ = run_program(build_program(g, record=True), xs, 1)
    assert np.array_equal(counts["a"].reshape(2, 70), a)


@pytest.mark.parametrize("exp,bias,binary", [(0, 0, False), (3, 0, False), (-5, 7, False), (0, -LIMIT, True)])
def test_scale_on_the_event_engine_at_the_limits(exp, bias, binary):
    rng = np.random.default_rng(1)
    x = rng.integers(-LIMIT, LIMIT, (2, 3, 4))
    x[0, 0, :4] = [-LIMIT, LIMIT - 1, 0, 1]
    w = rng.integers(fx.WEIGHT_MANT_MIN, fx.WEIGHT_MANT_MAX + 1, (2, 1, 4))
    g = Graph("scale", timesteps=1)
    g.add(ir.Input("in", shape=(2, 3, 4), fixed=fx.InputFixed(scale=1.0, num_message_bits=24)))
    g.add(ir.Scale("sc", weight=np.ones((2, 1, 4)), fixed=fx.SynapseFixed(
        weight=w, weight_exp=exp, num_message_bits=0 if binary else 24, bias=np.array(bias))), ["in"])
    g.add(ir.Output("out", mode="potential", fixed=fx.ReadoutFixed(mode="potential")), ["sc"])
    g.validate()
    _, out, _ = _both_engines_plain(g, x)
    m = (x != 0).astype(np.int64) if binary else x
    p = m * w
    exact = _wrap((p << exp if exp > 0 else p >> -exp) + bias)
    assert np.array_equal(out, exact.reshape(-1))


def _both_engines_plain(g, x):
    xs = np.asarray(x, np.float64).reshape((1, 1) + tuple(g.input.shape))
    events, _, _ = run_program(build_program(g), xs, 1)
    torch_, _, _ = simulate(g, xs, 1, simulator=IntegerSimulator)
    assert np.array_equal(events, torch_)
    return None, events.reshape(-1).astype(np.int64), None


def test_attention_chain_reads_the_transposed_popcount_without_a_copy():
    """``(q @ k^T) * s @ v`` as Spikformer's SSA: the popcount product lays its output out
    transposed for the spike-selected sums of ``@ v``, which then read it in place (no gather);
    the integers are numpy's ``wrap24`` of the exact products, on both engines."""
    rng = np.random.default_rng(3)
    h, n, d = 2, 9, 70                            # two bit words per row of q and of k
    g = Graph("ssa_chain", timesteps=1)
    g.add(ir.Input("in", shape=(3, h, n, d), fixed=fx.InputFixed(scale=1.0, num_message_bits=24)))
    for i, p in enumerate("qkv"):
        g.add(ir.Slice(f"{p}0", axis=0, start=i, stop=i + 1), ["in"])
        g.add(ir.Reshape(f"{p}1", shape=(h, n, d)), [f"{p}0"])
        _pass_spikes(g, p, f"{p}1")
    g.add(ir.Permute("k_t", perm=(0, 2, 1)), ["k"])
    g.add(ir.MatMul("qk", lhs="spike", rhs="spike"), ["q", "k_t"])
    w = np.array([[[5]], [[-3]]])
    g.add(ir.Scale("s", weight=np.ones((h, 1, 1)), fixed=fx.SynapseFixed(weight=w, num_message_bits=24)), ["qk"])
    g.add(ir.MatMul("av", lhs="real", rhs="spike"), ["s", "v"])
    g.add(ir.Output("out", mode="potential", fixed=fx.ReadoutFixed(mode="potential")), ["av"])
    g.validate()
    spikes = (rng.random((3, h, n, d)) < 0.4).astype(np.int64)
    prog, _, out = _both_engines(g, spikes)
    q, k, v = spikes
    assert np.array_equal(out, _wrap((q @ k.transpose(0, 2, 1)) * w @ v).reshape(-1))
    mm = prog.ops[prog.ops[:, K.KIND] == K.MATMUL]
    pop, ev = (prog.aux[op[K.A1]:op[K.A1] + 15] for op in mm)
    assert list(mm[:, K.A0]) == [K.MM_POPCOUNT, K.MM_EVENTS]
    assert pop[8] == 2 and pop[14] == 1           # two words a row, output transposed
    assert ev[1] == 0                              # @ v gathers nothing
    assert np.count_nonzero(prog.ops[:, K.KIND] == K.GATHER) == 3       # the Slices of q, k, v only
