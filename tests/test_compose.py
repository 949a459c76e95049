"""``snncompile.passes.compose``: conv -> conv chains with no neuron between become one Conv2d,
exactly (SDT v2's RepConv re-parameterisation), and only where the padding geometry allows."""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.compose import compose_synapses
from snncompile.quantize import quantize
from snncompile.targets import emulator, reference

T = 4


def repconv(C=6, H=5, seed=0, dw_pad=0):
    """head LIF -> conv 1x1 padded by its bias (BNAndPad) -> depthwise 3x3 -> conv 1x1 -> LIF."""
    rng = np.random.default_rng(seed)
    side = H + 2 * dw_pad
    g = Graph("rep", timesteps=T)
    g.add(ir.Input("in", shape=(C, H, H)))
    g.add(ir.Neuron("head", shape=(C, H, H), dv=0.5, threshold=1.0), ["in"])
    g.add(ir.Conv2d("pw1", weight=rng.normal(0, 0.6, (C, C, 1, 1)), bias=rng.normal(0.1, 0.2, C),
                    padding=1), ["head"])
    g.add(ir.Conv2d("dw", weight=rng.normal(0, 0.6, (C, 1, 3, 3)), groups=C, padding=dw_pad), ["pw1"])
    g.add(ir.Conv2d("pw2", weight=rng.normal(0, 0.6, (C, C, 1, 1)), bias=rng.normal(0.3, 0.1, C)), ["dw"])
    g.add(ir.Neuron("lif", shape=(C, side, side), dv=0.5, threshold=1.0), ["pw2"])
    g.add(ir.Output("out", mode="potential"), ["lif"])
    return g.validate()


def _inputs(shape, n=8, seed=1):
    return np.random.default_rng(seed).random((n, T) + shape) * 1.1


def _same_float(g, cg, x):
    a, b = reference.run(g, x, record=True), reference.run(cg, x, record=True)
    assert np.allclose(a.outputs, b.outputs, rtol=1e-9, atol=1e-9 * np.abs(a.outputs).max())
    for name in ("head", "lif"):
        assert np.array_equal(a.layer_counts[name], b.layer_counts[name])
        assert 0.02 <= a.layer_counts[name].mean() / T <= 0.6, name
    return a


def test_repconv_becomes_one_3x3_conv_with_zero_padding_and_a_folded_bias():
    g = repconv()
    cg, merged = compose_synapses(g)
    assert merged == ["pw1", "dw"] and "pw1" not in cg and "dw" not in cg
    conv = cg.node("pw2")
    assert conv.weight.shape == (6, 6, 3, 3) and conv.padding == (1, 1) and conv.groups == 1
    assert cg.inputs_of("pw2") == ["head"]
    _same_float(g, cg, _inputs((6, 5, 5)))
    # the original is untouched (the pass works on a copy)
    assert "pw1" in g and g.node("pw2").weight.shape == (6, 6, 1, 1)


def test_a_padded_conv_after_a_biased_border_is_left_as_it_is():
    """dw pads A's output with zeros while A's own border is its bias: not one conv; the exact
    part (dw -> pw2, a 1x1 after it) still composes."""
    g = repconv(dw_pad=1)
    cg, merged = compose_synapses(g)
    assert merged == ["dw"] and cg.inputs_of("pw2") == ["pw1"] and cg.node("pw2").padding == (1, 1)
    _same_float(g, cg, _inputs((6, 5, 5)))


def test_two_spatial_kernels_and_shared_convs_are_not_composed():
    g = Graph("keep", timesteps=T)
    g.add(ir.Input("in", shape=(2, 6, 6)))
    g.add(ir.Conv2d("a", weight=np.ones((2, 2, 3, 3))), ["in"])
    g.add(ir.Conv2d("b", weight=np.ones((2, 2, 3, 3))), ["a"])        # 3x3 after 3x3
    g.add(ir.Conv2d("c", weight=np.ones((2, 2, 1, 1))), ["in"])
    g.add(ir.Conv2d("d", weight=np.ones((2, 2, 1, 1))), ["c"])        # c also feeds the Add
    g.add(ir.Slice("crop", axis=1, start=0, stop=2), ["d"])
    g.add(ir.Slice("crop2", axis=2, start=0, stop=2), ["crop"])
    g.add(ir.Slice("cc", axis=1, start=0, stop=2), ["c"])
    g.add(ir.Slice("cc2", axis=2, start=0, stop=2), ["cc"])
    g.add(ir.Add("sum"), ["b", "crop2", "cc2"])
    g.add(ir.Output("out", mode="potential"), ["sum"])
    cg, merged = compose_synapses(g.validate())
    assert merged == [] and len(cg) == len(g)


def test_quantized_repconv_keeps_its_weight_bits_and_tracks_float():
    """Uncomposed, the depthwise conv's integer weights all round to 0 (two integer scales in a
    row, no shift); composed, the quantizer sees one synapse per neuron."""
    g = repconv()
    x = _inputs((6, 5, 5), n=24)
    qg, report = quantize(g, calib=x[:12])
    assert "pw1" not in qg and any("composed into the conv after them" in w for w in report.warnings)
    rows = {r.name: r for r in report.layers}
    assert rows["pw2"].max_mantissa >= 64
    rf = reference.run(g, x, record=True)
    rq = emulator.run(qg, x, precision="fixed", record=True, engine="torch")
    f, q = rf.layer_counts["lif"], rq.layer_counts["lif"]
    assert 0.05 <= f.mean() / T <= 0.6
    assert np.mean(f == q) >= 0.9
