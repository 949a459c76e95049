"""The emulator's event engine (compiled, per sample) == its torch engine, integer for integer.

The torch engine is checked against Lava itself (``test_emulator_lava.py``, whose stock
chains it runs, and ``test_emulator_zoo_lava.py``, which runs the default engine: events).
Here random graphs with integers at and around the wrap/saturation limits run on both
engines -- the torch engine on its plain int64 path -- and every output, per-node count and
per-step sum must be equal: conv (stride, padding, dilation, groups), sum and max pooling
(of spikes, and of graded inputs), Dense with weight exponents, binary and graded messages,
per-neuron parameters, every reset mode and comparison, residual Adds, recurrent edges and
potential readouts.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.quantize import quantize
from snncompile.targets import emulator
from snncompile.targets.emulator.events import NotEventEligible, build_program
from snncompile.targets.emulator.integer import IntNeuronState, _IntSynapse

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402

BIG = fx.STATE_MAX - 1


@contextlib.contextmanager
def int64_only():
    """The torch engine with every fast path off: ir.fixed's equations on int64."""
    saved = IntNeuronState.fast, _IntSynapse.float_paths
    IntNeuronState.fast, _IntSynapse.float_paths = False, False
    try:
        yield
    finally:
        IntNeuronState.fast, _IntSynapse.float_paths = saved


def assert_same_run(graph, x, **kw):
    events = emulator.run(graph, x, precision="fixed", record=True, engine="events", **kw)
    with int64_only():
        torch_ = emulator.run(graph, x, precision="fixed", record=True, engine="torch", fused=False, **kw)
    assert np.array_equal(events.outputs, torch_.outputs), \
        f"{int(np.sum(events.outputs != torch_.outputs))} output mismatches"
    assert events.layer_counts.keys() == torch_.layer_counts.keys()
    for name in torch_.layer_counts:
        assert np.array_equal(events.layer_counts[name], torch_.layer_counts[name]), name
        assert np.array_equal(events.layer_steps[name], torch_.layer_steps[name]), name
    return events



def assert_layers_fire(run, graph, lo=0.01, hi=0.6):
    """Every Neuron layer of a recorded run fires between ``lo`` and ``hi`` a step."""
    rates = {n: float(run.layer_counts[n].mean()) / graph.timesteps for n in run.layer_counts
             if isinstance(graph.node(n), ir.Neuron)}
    assert all(lo < r < hi for r in rates.values()), rates

# -- strategies --------------------------------------------------------------------------------

def _near(lo, hi, special=()):
    return st.one_of(st.sampled_from([lo, hi, *special]), st.integers(lo, hi))


@st.composite
def _param(draw, shape, lo, hi, special=()):
    """One value for the population, or one per neuron (half the time)."""
    if draw(st.booleans()):
        return draw(_near(lo, hi, special))
    n = int(np.prod(shape))
    return np.array(draw(st.lists(_near(lo, hi, special), min_size=n, max_size=n))).reshape(shape)


@st.composite
def neuron(draw, name, shape):
    p = lambda lo, hi, special=(): draw(_param(shape, lo, hi, special))  # noqa: E731
    vth = p(0, fx.VTH_MAX, (1, 2, 300))
    return ir.Neuron(name, shape=shape, fixed=fx.NeuronFixed(
        du=p(-1, 4095, (0, 1, 4094)), dv=p(0, 4095, (1, 2048, 4094, 4095)), vth=vth,
        bias_mant=p(fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX, (0,)), bias_exp=p(0, 7),
        reset_mode=draw(st.sampled_from(["zero", "subtract", "none"])),
        reset_value=p(-BIG, BIG, (0,)), reset_amount=p(-BIG, BIG, (0,)),
        compare=draw(st.sampled_from([">", ">="])),
        u_init=p(-BIG, BIG, (0,)), v_init=p(-BIG, BIG, (0,))))


def _weights(draw, shape, lo=-256, hi=255):
    n = int(np.prod(shape))
    return np.array(draw(st.lists(_near(lo, hi, (0,)), min_size=n, max_size=n))).reshape(shape)


@st.composite
def dense(draw, name, n_in, bits, n_out=None):
    n_out = n_out or draw(st.integers(1, 20))
    w = _weights(draw, (n_out, n_in), -300, 300)
    return ir.Linear(name, weight=np.zeros(w.shape), fixed=fx.SynapseFixed(
        weight=w, weight_exp=draw(st.integers(fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX)),
        num_weight_bits=draw(st.integers(1, 8)), num_message_bits=bits)), n_out


@st.composite
def conv(draw, name, c, h, w, bits):
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    co = groups * draw(st.integers(1, 3 if groups > 1 else 17))
    k = draw(st.sampled_from(range(1, min(3, h, w) + 1)))
    dil = draw(st.sampled_from([1, 2] if 2 * k - 1 <= min(h, w) else [1]))
    stride, pad = draw(st.sampled_from([1, 2])), draw(st.sampled_from(range(k // 2 + 1)))
    node = ir.Conv2d(name, weight=np.zeros((co, c // groups, k, k)), stride=stride, padding=pad,
                     dilation=dil, groups=groups,
                     fixed=fx.SynapseFixed(weight=_weights(draw, (co, c // groups, k, k)),
                                           num_message_bits=bits))
    return node, node.out_shape([(c, h, w)])


@st.composite
def graph_case(draw):
    """A random graph and its input: Input -> [conv stage -> (pool) -> Flatten] -> Dense
    stage(s) -> readout, each stage optionally with a residual Add or a recurrent edge."""
    T, n = draw(st.integers(2, 10)), draw(st.integers(1, 3))
    bits = draw(st.sampled_from([0, 8, 16, 24]))
    image = draw(st.sampled_from([True, True, False]))
    shape = ((draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7))) if image
             else (draw(st.integers(1, 12)),))
    g = Graph("random", timesteps=T)
    prev = g.add(ir.Input("in", shape=shape, fixed=fx.InputFixed(num_message_bits=bits)))
    if image:
        if draw(st.booleans()):     # max-pool the input itself: graded values, or binary ones
            prev = g.add(ir.MaxPool2d("pool_in", kernel_size=(2, 2), stride=(1, 1),
                                      padding=draw(st.sampled_from([(0, 0), (1, 1)]))), [prev])
        syn, out_shape = draw(conv("conv", *g.shape(prev), bits))
        prev = g.add(draw(neuron("lif_c", out_shape)), [g.add(syn, [prev])])
        pool = draw(st.sampled_from([None, "max", "sum"]))
        if pool and min(out_shape[1:]) >= 2:
            if pool == "max":
                prev = g.add(ir.MaxPool2d("pool", kernel_size=(2, 2), stride=(2, 2)), [prev])
            else:
                node = ir.SumPool2d("pool", kernel_size=(2, 2), stride=(1, 1))
                node.fixed = fx.SynapseFixed(weight=draw(_near(-256, 255)), num_message_bits=0)
                prev = g.add(draw(neuron("lif_p", node.out_shape([out_shape]))), [g.add(node, [prev])])
        prev = g.add(ir.Flatten("flat"), [prev])
        bits = 0
    n_in = int(np.prod(g.shape(prev)))
    for i in range(draw(st.integers(1, 2))):
        syn, n_out = draw(dense(f"fc{i}", n_in, bits))
        cur = g.add(syn, [prev])
        extra = draw(st.sampled_from([None, "residual", "recurrent"]))
        if extra == "residual":
            other, _ = draw(dense(f"fc{i}_b", n_in, bits, n_out))
            cur = g.add(ir.Add(f"add{i}"), [cur, g.add(other, [prev])])
        elif extra == "recurrent":
            cur = g.add(ir.Add(f"add{i}"), [cur])
        lif = g.add(draw(neuron(f"lif{i}", (n_out,))), [cur])
        if extra == "recurrent":
            rec, _ = draw(dense(f"rec{i}", n_out, 0, n_out))
            g.add(rec, [lif])
            g.add_edge(rec.name, f"add{i}", delay=1)
        prev, n_in, bits = lif, n_out, 0
    if draw(st.booleans()):
        g.add(ir.Output("out"), [prev])
    else:   # potential readout of a last Dense
        syn, n_out = draw(dense("readout_fc", n_in, 0))
        bias = np.array(draw(st.lists(_near(-2 ** 30, 2 ** 30, (0,)), min_size=n_out, max_size=n_out)))
        g.add(ir.Output("out", mode="potential", fixed=fx.ReadoutFixed(mode="potential", bias=bias)),
              [g.add(syn, [prev])])
    hi = 1 if bits_of(g) == 0 else 2 ** (bits_of(g) - 1) - 1
    values = draw(st.lists(_near(-hi if hi > 1 else 0, hi, (0,)), min_size=n * T * int(np.prod(shape)),
                           max_size=n * T * int(np.prod(shape))))
    return g, np.array(values, dtype=np.float64).reshape((n, T) + shape)


def bits_of(g):
    return g.input.fixed.num_message_bits


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graph_case())
def test_random_graphs_same_integers_on_both_engines(case):
    graph, x = case
    graph.validate()
    build_program(graph)          # every generated graph has an event layout
    assert_same_run(graph, x)


# -- the architecture matrix, inputs, fallbacks ------------------------------------------------

@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_same_integers_on_both_engines(name):
    m = zoo.MODELS[name]
    qg, _ = quantize(m.graph(), calib=m.inputs(16, 0))
    build_program(qg)
    assert_same_run(qg, m.inputs(12, 1))


def test_spike_trains_as_bool_uint8_int_and_float_give_the_same_run():
    m = zoo.MODELS["sj_sew"]                # spike-train input (2 channels: channel-last order)
    qg, _ = quantize(m.graph(), calib=m.inputs(16, 0))
    x = m.inputs(6, 2)
    ref = emulator.run(qg, x, precision="fixed")
    for dtype in (bool, np.uint8, np.int64, np.float64):
        assert np.array_equal(emulator.run(qg, x.astype(dtype), precision="fixed").outputs, ref.outputs)


def test_static_input_equals_the_same_image_at_every_step():
    m = zoo.MODELS["sj_conv_maxpool"]      # a static (graded) input model
    qg, _ = quantize(m.graph(), calib=m.inputs(16, 0))
    x = m.inputs(5, 3)
    static = assert_same_run(qg, x)
    repeated = emulator.run(qg, np.repeat(x[:, None], m.timesteps, axis=1), precision="fixed", record=True)
    assert np.array_equal(static.outputs, repeated.outputs)


def _flatten_add_graph():
    """An Add of a flattened image and a Dense output: their values are laid out differently
    (channel-last vs PyTorch order); the event engine gathers the image into the Dense order."""
    g = Graph("mixed_add", timesteps=3)
    g.add(ir.Input("in", shape=(2, 2, 2), fixed=fx.InputFixed()))
    g.add(ir.Flatten("flat"), ["in"])
    g.add(ir.Linear("fc", weight=np.zeros((8, 8)), fixed=fx.SynapseFixed(weight=np.eye(8, dtype=int) * 100)), ["flat"])
    g.add(ir.Add("add"), ["flat", "fc"])
    g.add(ir.Neuron("lif", shape=(8,), fixed=fx.NeuronFixed(vth=1)), ["add"])
    g.add(ir.Output("out"), ["lif"])
    return g


def test_an_add_of_values_laid_out_differently_gathers_them():
    g = _flatten_add_graph()
    x = (np.random.default_rng(0).random((4, 3, 2, 2, 2)) < 0.5).astype(float)
    run = assert_same_run(g, x)
    assert 0 < run.outputs.mean() < 1


def _delayed_reshape_graph():
    """A Reshape of the previous step's spikes (a recurrent edge into a layout): the event
    engine has no layout for it (a renaming of a value that only exists as last step's copy)."""
    g = Graph("delayed_reshape", timesteps=3)
    g.add(ir.Input("in", shape=(8,), fixed=fx.InputFixed()))
    g.add(ir.Linear("fc", weight=np.zeros((8, 8)), fixed=fx.SynapseFixed(weight=np.eye(8, dtype=int) * 100)), ["in"])
    g.add(ir.Reshape("r", shape=(2, 4)))
    g.add(ir.Flatten("flat"), ["r"])
    g.add(ir.Linear("fc2", weight=np.zeros((8, 8)), fixed=fx.SynapseFixed(weight=np.roll(np.eye(8, dtype=int), 1, 0) * 70)),
          ["flat"])
    g.add(ir.Add("add"), ["fc", "fc2"])
    g.add(ir.Neuron("lif", shape=(8,), fixed=fx.NeuronFixed(vth=1)), ["add"])
    g.add_edge("lif", "r", delay=1)
    g.add(ir.Output("out"), ["lif"])
    return g


def test_a_graph_without_event_layout_falls_back_or_says_why():
    g = _delayed_reshape_graph()
    with pytest.raises(NotEventEligible, match="node 'r': Reshape of a delayed value"):
        build_program(g)
    x = (np.random.default_rng(0).random((4, 3, 8)) < 0.5).astype(float)
    with int64_only():
        expected = emulator.run(g, x, precision="fixed", engine="torch").outputs
    assert np.array_equal(emulator.run(g, x, precision="fixed").outputs, expected)     # auto: torch
    assert 0 < expected.mean() < 1
    with pytest.raises(SnnCompileError, match="graph 'delayed_reshape' cannot run on the event engine: "
                                              "node 'r': Reshape of a delayed value"):
        emulator.run(g, x, precision="fixed", engine="events")


def test_unknown_engine_is_refused():
    with pytest.raises(SnnCompileError, match="unknown emulator engine 'gpu'; choose one of auto, events, torch"):
        emulator.run(_delayed_reshape_graph(), np.zeros((1, 3, 8)), precision="fixed", engine="gpu")


def test_a_graph_changed_in_place_is_laid_out_again():
    """Programs are cached by a digest of the graph: an in-place change must not reuse one."""
    m = zoo.MODELS["sj_mlp"]
    qg, _ = quantize(m.graph(), calib=m.inputs(16, 0))
    x = m.inputs(8, 1)
    before = emulator.run(qg, x, precision="fixed").outputs
    neuron = next(n for n in qg if isinstance(n, ir.Neuron))
    neuron.fixed.vth[...] = neuron.fixed.vth // 4 + 1          # a much lower threshold
    after = assert_same_run(qg, x).outputs
    assert not np.array_equal(before, after)


@pytest.mark.parametrize("channels", [20, 32])
@pytest.mark.parametrize("graded", [False, True])
def test_max_pool_windows_of_spikes_and_graded_values_over_whole_vectors_and_the_rest(channels, graded):
    """Channel-last max-pools run window by window (16-lane vector max, the channels past the
    last whole vector one by one, padded positions repeating a window input), with
    overlapping windows and padding: of spike maps, and of a graded input image (graded)."""
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron

    from snncompile.frontend import from_torch
    from snncompile.targets.emulator import event_kernel as K
    torch.manual_seed(channels)
    pool = layer.MaxPool2d(3, stride=2, padding=1)
    c_in = channels if graded else 1
    body = ([pool, layer.Conv2d(c_in, 8, 3, padding=1), neuron.IFNode()] if graded
            else [layer.Conv2d(1, channels, 3, padding=1), neuron.IFNode(), pool])
    n_flat = 8 * 25 if graded else channels * 25
    m = nn.Sequential(*body, layer.Flatten(), layer.Linear(n_flat, 10), neuron.IFNode()).eval()
    with torch.no_grad():                      # weights large enough that every layer fires
        for mod in m:
            if hasattr(mod, "weight"):
                mod.weight.mul_(4.0)
    x = torch.rand(8, c_in, 9, 9).numpy()
    qg, _ = quantize(from_torch(m, (c_in, 9, 9), 4, name="pool"), calib=x)
    assert K.MAXPOOL_WINDOWS in build_program(qg).ops[:, K.KIND]
    run = assert_same_run(qg, x)
    rates = [float(run.layer_counts[n].mean()) / 4 for n in run.layer_counts
             if isinstance(qg.node(n), ir.Neuron)]
    assert all(0.01 < r < 0.9 for r in rates), rates          # every layer fires


def test_strided_conv_fan_outs_are_padded_to_one_length_with_zero_weight_runs():
    """A stride-2 conv's inputs fan out to 1, 2 or 4 runs; padded, every input lists 4, the
    extra entries adding a zero weight run into room nothing reads (no mispredicted trip
    counts); a padding that would more than double the table is not made."""
    from snncompile.targets.emulator.events import conv_entries, padded_fan_outs
    indptr, out, w, run = conv_entries((1, 16, 16), (8, 1, 3, 3), (2, 2), (1, 1), (1, 1), 1)
    weights = np.arange(1, 8 * 9 + 1)
    assert sorted(set(np.diff(indptr))) == [1, 2, 4]
    p_ptr, p_out, p_w, p_weights, room = padded_fan_outs(indptr, out, w, weights, run, 8 * 64)
    assert set(np.diff(p_ptr)) == {4} and room == run == 8
    assert p_weights[-8:].tolist() == [0] * 8 and p_weights[:-8].tolist() == weights.tolist()
    for i in range(256):                       # the real entries kept, in order, then padding
        real = list(zip(out[indptr[i]:indptr[i + 1]], w[indptr[i]:indptr[i + 1]]))
        got = list(zip(p_out[p_ptr[i]:p_ptr[i + 1]], p_w[p_ptr[i]:p_ptr[i + 1]]))
        assert got == real + [(8 * 64, len(weights))] * (4 - len(real))
    assert padded_fan_outs(indptr, out, w, weights, run, 8 * 64, budget=len(out))[4] == 0
    small = conv_entries((1, 8, 8), (8, 1, 3, 3), (2, 2), (1, 1), (1, 1), 1)  # 4 x 64 > 2 x 121
    assert padded_fan_outs(*small[:3], np.arange(72), 8, 8 * 16)[4] == 0


def _apply_table(indptr, out, w, weights, run, messages, size):
    """What a synapse table adds up (numpy): message i adds m_i * its entries' weight runs."""
    acc = np.zeros(size, np.int64)
    for i, m in enumerate(messages):
        for e in range(indptr[i], indptr[i + 1]):
            acc[out[e]:out[e] + run] += m * weights[w[e]:w[e] + run]
    return acc


@pytest.mark.parametrize("c_in, c_out, stride", [(8, 16, 2), (4, 16, 1), (3, 16, 2)])
def test_paired_runs_join_neighbouring_pixels_into_one_entry_with_the_same_sums(c_in, c_out, stride):
    """A 16-channel conv's entries joined two by two (an input's runs into neighbouring output
    pixels become one run of twice the lanes, a lone run gets a zero half): fewer entries,
    whole-vector runs, and the same sums for any messages; 8- and 32-lane runs (half a vector;
    two already) are left alone."""
    from snncompile.targets.emulator.events import conv_entries, paired_runs
    H = 9
    indptr, out, w, run = conv_entries((c_in, H, H), (c_out, c_in, 3, 3), (stride, stride), (1, 1), (1, 1), 1)
    Ho = (H - 1) // stride + 1
    n_out = c_out * Ho * Ho
    weights = np.random.default_rng(0).integers(-99, 99, c_in * 9 * c_out)
    p_ptr, p_out, p_w, p_weights, p_run, room = paired_runs(indptr, out, w, weights, run, n_out)
    assert p_run == 2 * run and len(p_out) < len(out)
    assert np.all(np.diff(p_ptr) <= -(-np.diff(indptr) // 2) + 1)
    assert 0 <= room <= run and np.all(p_out + p_run <= n_out + room)
    messages = np.random.default_rng(1).integers(-3, 4, c_in * H * H)
    want = _apply_table(indptr, out, w, weights, run, messages, n_out)
    got = _apply_table(p_ptr, p_out, p_w, p_weights, p_run, messages, n_out + room)
    assert np.array_equal(got[:n_out], want) and not np.any(got[n_out:])
    for co in (8, 32):
        other = conv_entries((1, H, H), (co, 1, 3, 3), (2, 2), (1, 1), (1, 1), 1)
        assert paired_runs(*other[:3], np.arange(9 * co), co, co * 25)[4:] == (co, 0)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_conv_snn_with_paired_16_and_32_lane_runs_gives_the_same_integers(stride):
    """End to end on LIF populations of SpikingJelly's default tau = 2 (the voltage decay as
    a shift): a 16-channel conv laid out as paired runs (32 lanes) and a 32-channel one, binary
    input messages read from the uint8 input's bytes (the last 32 of 288 in a partial word),
    every layer firing."""
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron

    from snncompile.frontend import from_torch
    from snncompile.targets.emulator import event_kernel as K
    torch.manual_seed(stride)
    m = nn.Sequential(layer.Conv2d(2, 16, 3, stride=stride, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Conv2d(16, 32, 3, stride=stride, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Flatten(), layer.Linear(32 * (12 // stride // stride) ** 2, 10),
                      neuron.LIFNode(tau=2.0)).eval()
    with torch.no_grad():
        for mod in m:
            if hasattr(mod, "weight"):
                mod.weight.mul_(6.0 if isinstance(mod, nn.Conv2d) else 6.0 * stride ** 2)
    x = (torch.rand(6, 8, 2, 12, 12) < 0.3).float().numpy()
    qg, _ = quantize(from_torch(m, (2, 12, 12), 8, name="paired"), calib=x)
    prog = build_program(qg)
    synapses = prog.ops[prog.ops[:, K.KIND] == K.SYNAPSE]
    assert synapses[0, K.A5] == 32                     # the 16-channel conv's runs, paired
    indptr = prog.tables[0]
    for row in synapses[(synapses[:, K.A1] == 0) & (synapses[:, K.A9] == 0)]:   # per-input convs: all list as many
        counts = np.diff(indptr[row[K.A4]:row[K.A4] + row[K.SIZE] + 1])   # entries carry that
        assert row[K.A6] == (counts[0] if np.all(counts == counts[0]) else 0)   # count (else 0)
    assert synapses[0, K.A6] > 0
    neurons = prog.ops[prog.ops[:, K.KIND] == K.NEURON]
    assert np.all(neurons[:, K.A4] & 16)                       # the shift decay
    assert prog.ops[prog.ops[:, K.KIND] == K.INPUT][0, K.A0] == 0   # the bit map straight from uint8
    assert_layers_fire(assert_same_run(qg, x), qg)


@pytest.mark.parametrize("params", ["shared", "bias per neuron", "all per neuron"])
@pytest.mark.parametrize("reset_mode", ["zero", "subtract", "none"])
def test_neuron_update_in_16_lane_vectors_and_the_rest_at_the_limits(params, reset_mode):
    """The event kernel's neuron update (16 neurons a vector, ``lif_vector.lif16``, and the
    last fewer than 16 in masked lanes, ``lif16_tail``) == the torch engine's int64 equations
    (``integer.lif_step_exact``), u, v, spikes and the bit map compared after every step: 37
    neurons (two vectors and 5 more), 5 (the masked lanes alone) or 100 (a second bit-map
    word, its tail at bit 32) in turn,
    activations anywhere in int32, states and parameters at and around the wrap and
    saturation limits, for every decay case -- current forgotten or decayed, voltage held,
    decayed by a power of two (a shift, 1/2 to 1/4096) or by another factor -- and reset
    amounts past 2**24 (clamped in the vector code)."""
    import torch

    from snncompile.targets.emulator import event_kernel as K
    rng = np.random.default_rng(abs(hash((params, reset_mode))) % 2 ** 32)
    steps = 12

    def per(values):      # one value, or per neuron: in the layout the case asks for
        return np.asarray(values) if params == "all per neuron" else int(np.asarray(values).reshape(-1)[0])

    fired, flags, case = [], set(), 0
    for du in (4095, 0, 1234):                  # keep_u 0 (forgotten), 4095, per neuron
        for dv in (0, 2048, 4095, 3072, 1000):  # keep_v 4096 (held), 2048, 1, 1024, 3096
            n, case = (37, 5, 100)[case % 3], case + 1
            g = Graph("lanes", timesteps=steps)
            prev = g.add(ir.Input("in", shape=(n,), fixed=fx.InputFixed(num_message_bits=24)))
            fc = ir.Linear("fc", weight=np.zeros((n, n)), fixed=fx.SynapseFixed(
                weight=np.eye(n, dtype=np.int64), num_message_bits=24))
            bias = rng.integers(fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX + 1, n)
            big = rng.choice([-BIG, BIG, 2 ** 31 - 1, -2 ** 31 + 1, 2 ** 30, 0, 12345], n)
            lif = ir.Neuron("lif", shape=(n,), fixed=fx.NeuronFixed(
                du=per(np.full(n, du) if du != 1234 else rng.integers(1, 4094, n)),
                dv=per(np.full(n, dv)), vth=per(rng.integers(1, 3000, n)),
                bias_mant=bias if params != "shared" else int(bias[0]), bias_exp=per(rng.integers(0, 7, n)),
                reset_mode=reset_mode, reset_value=per(rng.integers(-BIG, BIG, n)),
                reset_amount=per(np.clip(big, -2 ** 31 + 1, 2 ** 31 - 1)),
                compare=">=", u_init=per(rng.integers(-BIG, BIG, n)), v_init=per(rng.integers(-BIG, BIG, n))))
            g.add(ir.Output("out"), [g.add(lif, [g.add(fc, [prev])])])
            prog = build_program(g)
            assert prog.ops[prog.ops[:, K.KIND] == K.INPUT][0, K.A0] == 1   # graded: values copied
            op = prog.ops[np.nonzero(prog.ops[:, K.KIND] == K.NEURON)[0][0]]
            flags.add(int(op[K.A4]))
            src, dst, so = op[K.SRC], op[K.DST], op[K.A0]
            val, bits = np.zeros(prog.val_size + 80, np.int32), np.zeros(prog.n_words, np.int64)
            U, V = prog.u_init.copy(), prog.v_init.copy()
            with int64_only():
                ref = IntNeuronState(lif, 1)
                for t in range(steps):
                    a = rng.choice([rng.integers(-2 ** 31, 2 ** 31, n), rng.integers(-4000, 4000, n),
                                    rng.integers(-3, 4, n)])
                    val[src:src + n] = a
                    K._neuron(val, bits, op, U, V, prog.params)
                    s = ref.step(torch.from_numpy(a.astype(np.int64))[None]).numpy()[0]
                    assert np.array_equal(V[so:so + n], ref.v.numpy()[0]), (du, dv, t)
                    if op[K.A4] & 2 == 0:        # (a forgotten current is not stored)
                        assert np.array_equal(U[so:so + n], ref.u.numpy()[0]), (du, dv, t)
                    assert np.array_equal(val[dst:dst + n], s), (du, dv, t)
                    want = sum(1 << int(i) for i in np.nonzero(s)[0])
                    words = bits[op[K.DST_BITS]:op[K.DST_BITS] + (n + 63) // 64]
                    assert sum(int(w) % 2 ** 64 << (64 * k) for k, w in enumerate(words)) == want, (n, du, dv, t)
                    fired.append(float(s.mean()))
    assert 0.05 < np.mean(fired) < 0.95, np.mean(fired)
    layout = {"shared": 1, "bias per neuron": 8, "all per neuron": 0}[params]
    assert all(f & 9 == layout for f in flags), flags
    kinds = {(f & 2, f & 4, f & 16) for f in flags}            # forgotten, held, shifted
    assert len(kinds) == 6, kinds


def _uniform(shape, seed):
    return np.random.default_rng(seed).random(shape)


def _one_channel_snn(c_out, kernel, stride, padding, hw, second=False, seed=0):
    """Input (1, H, W) spike trains -> Conv(1 -> c_out) -> LIF [-> Conv(c_out -> 1) -> LIF ->
    Conv(1 -> 8, 3x3) -> LIF: a patch conv reading a Neuron's bit map] -> Flatten -> Linear -> LIF."""
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron
    torch.manual_seed(seed)
    conv = layer.Conv2d(1, c_out, kernel, stride=stride, padding=padding)
    mods = [conv, neuron.LIFNode(tau=2.0)]
    shape = conv(torch.zeros(1, 1, *hw)).shape[1:]
    if second:
        mods += [layer.Conv2d(c_out, 1, 1), neuron.LIFNode(tau=2.0),
                 layer.Conv2d(1, 8, 3, padding=1), neuron.LIFNode(tau=2.0)]
        shape = (8,) + tuple(shape[1:])
    m = nn.Sequential(*mods, layer.Flatten(), layer.Linear(int(np.prod(shape)), 10), neuron.LIFNode(tau=2.0))
    with torch.no_grad():
        for mod in m:
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(6.0 if mod.in_channels == 1 else 15.0)
            elif isinstance(mod, nn.Linear):
                mod.weight.mul_(8.0)
    return m


@pytest.mark.parametrize("c_out, kernel, stride, padding, hw, second", [
    (8, 3, 2, 1, (28, 28), False),        # the spike-train MNIST conv SNN's first conv
    (16, 3, 1, 1, (13, 30), True),        # rows across word boundaries; a patch conv of spikes
    (5, 2, 1, 0, (9, 62), False),         # 62 columns, no padding: the widest row; 5 lanes
    (24, (1, 5), 1, (0, 2), (7, 20), False),   # one kernel row of 5 taps; 16 + 8 lanes
    (8, 3, 3, 2, (20, 20), False),        # stride 3: the generic loops
    (64, 3, 1, 1, (10, 10), False),       # 64 channels: the largest table (2**15 values)
])
def test_a_one_channel_conv_of_spikes_as_a_patch_table_gives_the_same_integers(
        c_out, kernel, stride, padding, hw, second):
    """A conv of binary messages from one input channel (``K.PATCH_CONV``: each output
    pixel's window of input bits indexes a table of weight sums) == the torch engine's
    int64 equations, counts and every layer's spikes, with every layer firing."""
    from snncompile.frontend import from_torch
    from snncompile.targets.emulator import event_kernel as K
    m = _one_channel_snn(c_out, kernel, stride, padding, hw, second)
    x = (_uniform((5, 8, 1) + hw, seed=c_out) < 0.3).astype(np.float32)
    qg, _ = quantize(from_torch(m, (1,) + hw, 8, name="patch"), calib=x)
    prog = build_program(qg)
    assert int(np.sum(prog.ops[:, K.KIND] == K.PATCH_CONV)) == (2 if second else 1)
    assert prog.ops[prog.ops[:, K.KIND] == K.INPUT][0, K.A0] == 0   # only the input's bit map is read
    run = assert_same_run(qg, x)
    assert_layers_fire(run, qg)


@pytest.mark.parametrize("change, why", [
    (dict(c_in=2), "two input channels: a table of 2**18 rows"),
    (dict(dilation=2), "a dilated kernel"),
    (dict(hw=(8, 64)), "64 columns and padding do not fit one word"),
    (dict(bits=8), "graded input messages"),
])
def test_convs_a_patch_table_does_not_suit_keep_their_event_tables(change, why):
    """Outside the patch conv's geometry the conv is a synapse of per-input fan-outs, and the
    two engines still agree."""
    from snncompile.targets.emulator import event_kernel as K
    c_in, hw, bits = change.get("c_in", 1), change.get("hw", (10, 10)), change.get("bits", 0)
    rng = np.random.default_rng(3)
    w = rng.integers(-200, 200, (8, c_in, 3, 3))
    g = Graph("no_patch", timesteps=6)
    g.add(ir.Input("in", shape=(c_in,) + hw, fixed=fx.InputFixed(num_message_bits=bits)))
    g.add(ir.Conv2d("conv", weight=np.zeros(w.shape), padding=change.get("dilation", 1),
                    dilation=change.get("dilation", 1),
                    fixed=fx.SynapseFixed(weight=w, num_message_bits=bits)), ["in"])
    shape = g.shape("conv")
    g.add(ir.Neuron("lif", shape=shape, fixed=fx.NeuronFixed(du=4095, dv=2048, vth=300)), ["conv"])
    g.add(ir.Output("out"), ["lif"])
    hi = 1 if bits == 0 else 100
    x = rng.integers(0, hi + 1, (3, 6, c_in) + hw).astype(np.float64)
    prog = build_program(g)
    assert K.PATCH_CONV not in prog.ops[:, K.KIND], why
    run = assert_same_run(g, x)
    rate = float(run.outputs.mean())
    assert 0.01 < rate < 0.9, rate


def test_patch_table_rows_are_the_sums_of_the_set_taps():
    from snncompile.targets.emulator.events import PATCH_TABLE_MAX, patch_table
    w = np.arange(2 * 3 * 3).reshape(2, 1, 3, 3) - 7
    table = patch_table(w)
    assert table.shape == (512, 2)
    for p in (0, 1, 0b101, 0b100010001, 511):
        taps = [(p >> b) & 1 for b in range(9)]
        assert table[p].tolist() == [int(np.dot(taps, w[c, 0].reshape(-1))) for c in range(2)]
    assert patch_table(np.zeros((2, 2, 3, 3))) is None           # two input channels
    assert patch_table(np.zeros((1, 1, 4, 2))) is None           # four kernel rows
    assert patch_table(np.zeros((PATCH_TABLE_MAX // 512 + 1, 1, 3, 3))) is None


@pytest.mark.lava
def test_a_patch_conv_snn_equals_lava_fixed_pt():
    """The patch conv on Lava's own fixed_pt processes: the same spikes, every layer firing."""
    from snncompile.frontend import from_torch
    from snncompile.targets import run
    m = _one_channel_snn(8, 3, 2, 1, (12, 12), second=True, seed=4)
    x = (_uniform((2, 8, 1, 12, 12), seed=9) < 0.3).astype(np.float32)
    qg, _ = quantize(from_torch(m, (1, 12, 12), 8, name="patch_lava"), calib=x)
    emu = run(qg, x, backend="emulator", precision="fixed", record=True)
    assert_layers_fire(emu, qg)
    lava = run(qg, x, backend="lava", precision="fixed")
    assert np.array_equal(lava.outputs, emu.outputs)


# -- spikes summed in registers: by pixel (convs) and by bit-map word (Dense) --------------------

def _grouped_graph(c_in, c_out, hw, stride=1, padding=1, dilation=1, groups=1, kernel=3, bias=False,
                   weight_scale=1, n_lin=10, seed=0, conv_vth=None):
    """Input (c_in, H, W) spikes -> Conv -> LIF -> Flatten -> Linear -> LIF -> Output, integer
    weights drawn so that both populations fire (thresholds from the expected drive;
    ``conv_vth``: zero-mean conv weights and that threshold)."""
    rng = np.random.default_rng(seed)
    g = Graph("grouped", timesteps=6)
    g.add(ir.Input("in", shape=(c_in,) + hw, fixed=fx.InputFixed()))
    lo, hi = (-128, 128) if conv_vth else (-100, 156)
    w = rng.integers(lo, hi, (c_out, c_in // groups, kernel, kernel)) * weight_scale
    fixed = fx.SynapseFixed(weight=w, bias=rng.integers(-500, 500, c_out)[:, None, None] if bias else None)
    g.add(ir.Conv2d("conv", weight=np.zeros(w.shape), stride=stride, padding=padding, dilation=dilation,
                    groups=groups, fixed=fixed), ["in"])
    shape = g.shape("conv")
    drive = 0.3 * (c_in // groups) * kernel * kernel * 28 * weight_scale     # (the mean sum)
    g.add(ir.Neuron("lif", shape=shape, fixed=fx.NeuronFixed(du=4095, dv=2048, vth=conv_vth or int(1.6 * drive))), ["conv"])
    g.add(ir.Flatten("flat"), ["lif"])
    n = int(np.prod(shape))
    g.add(ir.Linear("fc", weight=np.zeros((n_lin, n)),
                    fixed=fx.SynapseFixed(weight=rng.integers(-120, 121, (n_lin, n)), weight_exp=1)), ["flat"])
    spread = 2 * 70 * np.sqrt(0.15 * n)        # the sums' spread (mean 0) after the exponent
    g.add(ir.Neuron("out_lif", shape=(n_lin,), fixed=fx.NeuronFixed(du=4095, dv=2048, vth=int(spread))),
          ["fc"])
    g.add(ir.Output("out"), ["out_lif"])
    return g


@pytest.mark.parametrize("c_in, c_out, hw, kw", [
    (16, 32, (14, 14), {}),                            # the shipped model's second conv
    (16, 16, (13, 11), dict(stride=2)),                # stride 2: 1, 2 or 4 output pixels a pixel
    (32, 24, (9, 9), dict(dilation=2, padding=2)),     # dilation; 16 + 8 output lanes
    (64, 40, (6, 7), dict(bias=True)),                 # a whole word a pixel; 32 + 8 lanes; a bias
    (128, 128, (5, 5), {}),                            # wide: two words a pixel, 64 + 64 lanes
    (16, 8, (8, 8), dict(weight_scale=1000, conv_vth=62000)),   # sums may pass 2**23: the wrap
])
def test_a_conv_of_spikes_by_pixel_gives_the_same_integers(c_in, c_out, hw, kw):
    """A conv of spikes laid out by input pixel (``events.pixel_entries``: one pixel's spikes
    summed in registers per tap) and the Dense after it by bit-map word == the torch
    engine's int64 equations, every layer firing."""
    from snncompile.targets.emulator import event_kernel as K
    g = _grouped_graph(c_in, c_out, hw, **kw)
    prog = build_program(g)
    synapses = prog.ops[prog.ops[:, K.KIND] == K.SYNAPSE]
    assert synapses[:, K.A9].tolist() == [c_in, 64]          # the conv by pixel, the Dense by word
    assert synapses[0, K.A8] == int(kw.get("weight_scale", 1) == 1)    # sums below 2**23: no wrap
    x = (_uniform((4, 6, c_in) + hw, seed=c_in) < 0.3).astype(np.float64)
    assert_layers_fire(assert_same_run(g, x), g)


@pytest.mark.parametrize("change, why", [
    (dict(c_in=8), "8 channels: fewer than events.MIN_GROUP (a vector add a spike is faster)"),
    (dict(c_in=24), "24 channels: a pixel's group would straddle words"),
    (dict(c_out=12), "12 output channels: not whole 8-lane blocks"),
    (dict(groups=2), "a grouped conv"),
])
def test_convs_not_laid_out_by_pixel_keep_their_per_input_tables(change, why):
    from snncompile.targets.emulator import event_kernel as K
    g = _grouped_graph(change.get("c_in", 16), change.get("c_out", 16), (8, 8), groups=change.get("groups", 1))
    prog = build_program(g)
    synapses = prog.ops[prog.ops[:, K.KIND] == K.SYNAPSE]
    assert synapses[:, K.A9].tolist() == [0, 64], why
    x = (_uniform((4, 6, change.get("c_in", 16), 8, 8), seed=1) < 0.3).astype(np.float64)
    assert_layers_fire(assert_same_run(g, x), g)


@pytest.mark.parametrize("n_in, n_out", [(100, 40), (784, 10), (64, 16)])
def test_a_dense_of_spikes_by_word_gives_the_same_integers(n_in, n_out):
    """A Dense of spikes sums each bit-map word's weight rows in registers (``_dense_words``;
    a last, partial word; 32 + 16 lanes) == the torch engine, with a weight exponent and a
    bias; graded messages keep the per-message path (A9 0)."""
    from snncompile.targets.emulator import event_kernel as K
    rng = np.random.default_rng(n_in)
    for bits in (0, 6):
        g = Graph("dense", timesteps=5)
        g.add(ir.Input("in", shape=(n_in,), fixed=fx.InputFixed(num_message_bits=bits)))
        g.add(ir.Linear("fc", weight=np.zeros((n_out, n_in)), fixed=fx.SynapseFixed(
            weight=rng.integers(-100, 160, (n_out, n_in)), weight_exp=-1, num_message_bits=bits,
            bias=rng.integers(-50, 50, n_out))), ["in"])
        vth = int(n_in * 0.3 * 30 * (1 if bits == 0 else 20) / 2)
        g.add(ir.Neuron("lif", shape=(n_out,), fixed=fx.NeuronFixed(du=4095, dv=2048, vth=vth)), ["fc"])
        g.add(ir.Output("out"), ["lif"])
        prog = build_program(g)
        assert prog.ops[prog.ops[:, K.KIND] == K.SYNAPSE][0, K.A9] == (64 if bits == 0 else 0)
        hi = 1 if bits == 0 else 40
        x = (rng.random((4, 5, n_in)) < 0.3) * rng.integers(1, hi + 1, (4, 5, n_in))
        assert_layers_fire(assert_same_run(g, x.astype(np.float64)), g)


def test_the_per_spike_layout_gives_the_same_spikes_as_the_grouped_one(monkeypatch):
    """events.GROUP_SPIKES off (a vector add per spike: paired and padded runs, four copies
    of a Dense's outputs) and on: the same program outputs for the same graph."""
    from snncompile.targets.emulator import event_kernel as K
    from snncompile.targets.emulator import events
    g = _grouped_graph(16, 32, (10, 10), seed=5)
    x = (_uniform((3, 6, 16, 10, 10), seed=2) < 0.3).astype(np.float64)
    grouped = emulator.run(g, x, precision="fixed", record=True, engine="events")
    monkeypatch.setattr(events, "GROUP_SPIKES", False)
    assert build_program(g).ops[:, K.A9].max() == 0
    per_spike = emulator.run(g, x, precision="fixed", record=True, engine="events")
    assert np.array_equal(grouped.outputs, per_spike.outputs)
    for name in grouped.layer_counts:
        assert np.array_equal(grouped.layer_counts[name], per_spike.layer_counts[name]), name
    assert_layers_fire(grouped, g)


@pytest.mark.lava
def test_a_conv_snn_by_pixel_equals_lava_fixed_pt():
    """A 16-channel conv of spikes laid out by pixel, and the Dense by word, on Lava's own
    fixed_pt processes: the same spikes, every layer firing."""
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron

    from snncompile.frontend import from_torch
    from snncompile.targets import run
    from snncompile.targets.emulator import event_kernel as K
    import torch
    torch.manual_seed(3)
    m = nn.Sequential(layer.Conv2d(1, 16, 3, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Conv2d(16, 32, 3, stride=2, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Flatten(), layer.Linear(32 * 5 * 5, 10), neuron.LIFNode(tau=2.0)).eval()
    with torch.no_grad():
        for mod in m:
            if hasattr(mod, "weight"):
                mod.weight.mul_(6.0)
    x = (_uniform((2, 8, 1, 10, 10), seed=9) < 0.3).astype(np.float32)
    qg, _ = quantize(from_torch(m, (1, 10, 10), 8, name="pixel_lava"), calib=x)
    synapses = build_program(qg).ops
    assert sorted(synapses[synapses[:, K.KIND] == K.SYNAPSE][:, K.A9].tolist()) == [16, 64]
    emu = run(qg, x, backend="emulator", precision="fixed", record=True)
    assert_layers_fire(emu, qg)
    lava = run(qg, x, backend="lava", precision="fixed")
    assert np.array_equal(lava.outputs, emu.outputs)


@pytest.mark.parametrize("n, threads", [(4096, 2), (4097, 2), (1000, 2), (300, 16), (5000, 1), (63, 2)])
def test_tasks_cover_every_sample_once_in_order_and_end_small(n, threads):
    """``events.task_ranges``: every sample in exactly one task, in order; tasks of CHUNK, the
    last ``2 * threads * CHUNK`` samples in tasks of SMALL_TASK (the threads finish together)."""
    from snncompile.targets.emulator import events as E
    tasks = E.task_ranges(n, threads)
    assert tasks[0][0] == 0 and tasks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(tasks, tasks[1:]))
    sizes = [hi - lo for lo, hi in tasks]
    assert all(0 < s <= E.CHUNK for s in sizes)
    tail = 0 if threads == 1 else min(n, 2 * threads * E.CHUNK)
    assert all(s <= E.SMALL_TASK for s in sizes[len(sizes) - -(-tail // E.SMALL_TASK):])
    if threads == 1:
        assert sizes[:-1] == [E.CHUNK] * (len(sizes) - 1)
