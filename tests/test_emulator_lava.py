"""Emulator fixed point == Lava's stock fixed_pt processes (Dense, Conv, LIF), bit for bit.

These run raw Lava processes (``targets/emulator/stock_lava.py``: no snncompile Lava
mapping involved), so they check the equations written in ``snncompile.ir.fixed``
against the installed Lava source itself, with random integer parameters near the
wrap/saturation limits (hypothesis). Lava's per-stage latency is aligned as described
in ``stock_lava``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.targets.emulator.stock_lava import emulate_chain, run_stock_chain

pytestmark = pytest.mark.lava


def lava_chain(x, layers):
    spikes, u, v, _ = run_stock_chain(x, layers)
    return spikes, u, v


# -- strategies: integers at and around the limits -----------------------------------------

def _near(lo, hi, special=()):
    return st.one_of(st.sampled_from([lo, hi, *special]), st.integers(lo, hi))


@st.composite
def neuron_fixed(draw, shape, quiet=False):
    """Random LIF integers; ``quiet``: no bias and zero state (a neuron that stays at rest
    without input, needed before a second Lava stage, see module doc)."""
    big = fx.STATE_MAX - 1
    return fx.NeuronFixed(
        du=draw(_near(-1, 4095, (0, 1, 4094))),
        dv=draw(_near(0, 4095, (1, 4094))),
        vth=draw(st.one_of(st.integers(0, 300), _near(0, fx.VTH_MAX))),
        bias_mant=0 if quiet else draw(_near(fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX, (0,))),
        bias_exp=0 if quiet else draw(st.integers(0, 7)),
        u_init=0 if quiet else draw(_near(-big, big, (0,))),
        v_init=0 if quiet else draw(_near(-big, big, (0,))),
    )


@st.composite
def dense_case(draw):
    n_in, n_out, T = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(2, 10))
    bits = draw(st.sampled_from([0, 8, 16, 24]))
    hi = 1 if bits == 0 else 2 ** (bits - 1) - 1
    x = np.array(draw(st.lists(st.integers(-hi if bits else 0, hi), min_size=T * n_in,
                               max_size=T * n_in))).reshape(T, n_in)
    w = np.array(draw(st.lists(_near(-300, 300, (-256, 255, 254, -255)), min_size=n_in * n_out,
                               max_size=n_in * n_out))).reshape(n_out, n_in)
    syn = ir.Linear("fc0", weight=w.astype(float), fixed=fx.SynapseFixed(
        weight=w, weight_exp=draw(st.integers(fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX)),
        num_weight_bits=draw(st.integers(1, 8)), num_message_bits=bits))
    nf = draw(neuron_fixed(()))
    return x, [(syn, nf, (n_out,))], bits


@st.composite
def conv_case(draw):
    cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w_, k = draw(st.integers(3, 5)), draw(st.integers(3, 5)), draw(st.integers(1, 3))
    stride, pad, T = draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.integers(2, 6))
    bits = draw(st.sampled_from([0, 8, 20]))
    hi = 1 if bits == 0 else 2 ** (bits - 1) - 1
    n = T * cin * h * w_
    x = np.array(draw(st.lists(st.integers(-hi if bits else 0, hi), min_size=n, max_size=n)))
    x = x.reshape(T, cin, h, w_)
    nw = cout * cin * k * k
    w = np.array(draw(st.lists(_near(-256, 255), min_size=nw, max_size=nw))).reshape(cout, cin, k, k)
    syn = ir.Conv2d("conv0", weight=w.astype(float), stride=stride, padding=pad,
                    fixed=fx.SynapseFixed(weight=w, num_message_bits=bits))
    shape = syn.out_shape([(cin, h, w_)])
    nf = draw(neuron_fixed(()))
    return x, [(syn, nf, shape)], bits


def _check(case):
    x, layers, bits = case
    lava_s, lava_u, lava_v = lava_chain(x, layers)
    em_s, em_u, em_v = emulate_chain(x, layers, bits)
    assert np.array_equal(em_s, lava_s), f"spikes differ at {np.argwhere(em_s != lava_s)[:5]}"
    assert np.array_equal(em_u, lava_u)
    assert np.array_equal(em_v, lava_v)


# No shrinking: every example starts Lava (about 1 s); a failure prints its example anyway.
_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(dense_case())
def test_dense_lif_matches_lava_fixed(case):
    _check(case)


@_SETTINGS
@given(conv_case())
def test_conv_lif_matches_lava_fixed(case):
    _check(case)


@settings(_SETTINGS, max_examples=6)
@given(st.data())
def test_two_stage_chain_matches_lava_fixed(data):
    x, layers, bits = data.draw(dense_case())
    syn0, _, shape0 = layers[0]
    layers[0] = (syn0, data.draw(neuron_fixed((), quiet=True)), shape0)
    n_mid = shape0[0]
    w = np.array(data.draw(st.lists(st.integers(-256, 255), min_size=3 * n_mid, max_size=3 * n_mid)))
    syn1 = ir.Linear("fc1", weight=np.zeros((3, n_mid)), fixed=fx.SynapseFixed(
        weight=w.reshape(3, n_mid), weight_exp=data.draw(st.integers(0, 7))))
    layers.append((syn1, data.draw(neuron_fixed(())), (3,)))
    _check((x, layers, bits))


def test_wrap_and_saturation_are_exercised():
    """A hand-made case that must wrap u and saturate v (so the property tests are not
    passing on tame values only)."""
    x = np.array([[1], [1], [1], [0]] * 2)
    syn = ir.Linear("fc0", weight=np.ones((2, 1)), fixed=fx.SynapseFixed(
        weight=np.array([[255], [-256]]), weight_exp=7))
    nf = fx.NeuronFixed(du=-1, dv=0, vth=fx.VTH_MAX, bias_mant=4095, bias_exp=7)
    em_s, em_u, em_v = emulate_chain(x, [(syn, nf, (2,))], 0)
    lava_s, lava_u, lava_v = lava_chain(x, [(syn, nf, (2,))])
    assert np.array_equal(em_s, lava_s) and np.array_equal(em_u, lava_u) and np.array_equal(em_v, lava_v)
    assert abs(int(em_v[1])) == fx.STATE_MAX - 1 or int(em_s.sum()) > 0


def test_recurrent_layer_matches_lava_fixed():
    """Input -> Dense -> LIF with a recurrent Dense (the IR's delay-1 edge). In Lava the
    recurrent Dense's one-step latency *is* the delay; the input path's is aligned as usual."""
    from snncompile.ir.graph import Graph
    from snncompile.targets.emulator.integer import IntegerSimulator
    from snncompile.targets.emulator.stock_lava import _lava
    import torch

    rng = np.random.default_rng(3)
    T, n_in, n = 30, 5, 6
    x = (rng.random((T, n_in)) < 0.4).astype(np.int64)
    w_in, w_rec = rng.integers(-60, 200, (n, n_in)), rng.integers(-256, 255, (n, n))
    nf = fx.NeuronFixed(du=3000, dv=500, vth=40, bias_mant=0)
    g = Graph("rec", timesteps=T)
    g.add(ir.Input("in", shape=(n_in,), fixed=fx.InputFixed(num_message_bits=0)))
    g.add(ir.Linear("fc_in", weight=np.zeros((n, n_in)), fixed=fx.SynapseFixed(weight=w_in, weight_exp=2)), ["in"])
    g.add(ir.Add("join"), ["fc_in"])
    g.add(ir.Neuron("lif", shape=(n,), fixed=nf), ["join"])
    g.add(ir.Linear("fc_rec", weight=np.zeros((n, n)), fixed=fx.SynapseFixed(weight=w_rec, weight_exp=1)), ["lif"])
    g.add_edge("fc_rec", "join", delay=1)
    g.add(ir.Output("out"), ["lif"])
    sim = IntegerSimulator(g, 1)
    xs = np.concatenate([np.zeros_like(x[:1]), x])[:T].astype(np.float64)
    em = np.stack([sim.step(torch.from_numpy(xs[t][None]))[0].numpy() for t in range(T)])

    L = _lava()
    src = L["Source"](data=x.T.astype(np.int32).copy())
    d_in = L["Dense"](weights=w_in, weight_exp=2)
    d_rec = L["Dense"](weights=w_rec, weight_exp=1)
    lif = L["LIF"](shape=(n,), du=3000, dv=500, vth=40)
    sink = L["Sink"](shape=(n,), buffer=T)
    src.s_out.connect(d_in.s_in)
    d_in.a_out.connect(lif.a_in)
    d_rec.a_out.connect(lif.a_in)
    lif.s_out.connect(d_rec.s_in)
    lif.s_out.connect(sink.a_in)
    try:
        src.run(condition=L["RunSteps"](num_steps=T), run_cfg=L["Cfg"](select_tag="fixed_pt"))
        lava_s, lava_v = sink.data.get().T.astype(np.int64), lif.v.get().astype(np.int64)
    finally:
        src.stop()
    assert int(em.sum()) > 5
    assert np.array_equal(em, lava_s) and np.array_equal(sim.neurons["lif"].v[0].numpy(), lava_v)
