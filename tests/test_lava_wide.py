"""Wide channels and wide shape fields on Lava (issue 13, section 0).

Lava 0.10 keeps Conv's ``groups`` (and kernel/stride/padding/dilation) as int8: pooling
(a Conv with groups = channels) over 128+ channels gave 0 spikes with exit 0. The Lava
target now runs Conv with its own models (``targets/lava/procs/conv.py``). Every test
checks firing rates: a silent network would make every comparison pass."""
import numpy as np
import pytest

import snncompile.targets.lava  # noqa: F401  (installs the import hook before any `lava` import)
from snncompile.ir import Conv2d, Flatten, Graph, Input, Linear, Neuron, Output
from snncompile.ir import nodes as ir
from snncompile.quantize import quantize
from snncompile.targets import run

pytestmark = pytest.mark.lava

H = 4
T = 4
N = 2


def pooled_graph(channels: int) -> Graph:
    """Conv -> IF -> AvgPool2d(2) -> depthwise Conv (groups = C) -> IF -> SumPool2d(2) ->
    Linear -> IF: every grouped/pooled mapping at ``channels`` channels."""
    rng = np.random.default_rng(channels)
    g = Graph(f"wide{channels}", timesteps=T)
    g.add(Input("in", shape=(2, H, H)))
    g.add(Conv2d("conv", weight=rng.normal(0.0, 1.0, (channels, 2, 3, 3)), padding=1), ["in"])
    g.add(Neuron("if1", shape=(channels, H, H), threshold=2.0), ["conv"])
    g.add(ir.AvgPool2d("pool", kernel_size=2, stride=2), ["if1"])
    g.add(Conv2d("dw", weight=rng.normal(0.3, 1.0, (channels, 1, 3, 3)), padding=1, groups=channels),
          ["pool"])
    g.add(Neuron("if2", shape=(channels, H // 2, H // 2), threshold=1.0), ["dw"])
    g.add(ir.SumPool2d("sum", kernel_size=2, stride=2), ["if2"])
    g.add(Flatten("flat"), ["sum"])
    g.add(Linear("fc", weight=rng.normal(0.0, 2.0 / np.sqrt(channels), (10, channels))), ["flat"])
    g.add(Neuron("if3", shape=(10,), threshold=2.0), ["fc"])
    g.add(Output("out"), ["if3"])
    return g


def _inputs(seed=1):
    return (np.random.default_rng(seed).random((N, T, 2, H, H)) < 0.5).astype(float)


def _assert_fires(result, layers=("if1", "if2", "if3")):
    for layer in layers:
        steps = result.layer_counts[layer]
        rate = steps.sum() / (steps.size * T)
        assert 0.02 <= rate <= 0.5, f"{layer}: firing rate {rate:.3f}"


@pytest.mark.parametrize("channels", [pytest.param(127, marks=pytest.mark.slow), 128,
                                      pytest.param(255, marks=pytest.mark.slow),
                                      pytest.param(256, marks=pytest.mark.slow), 1024])
def test_pooling_and_depthwise_conv_at_any_channel_count(channels):
    g, x = pooled_graph(channels), _inputs()
    ref = run(g, x, record=True)
    _assert_fires(ref)
    lava = run(g, x, backend="lava", record=True)
    assert np.array_equal(lava.outputs, ref.outputs)
    for layer in ("if1", "if2", "if3"):
        np.testing.assert_array_equal(lava.layer_counts[layer], ref.layer_counts[layer], err_msg=layer)

    q, _ = quantize(g, calib=x)
    emu = run(q, x, backend="emulator", precision="fixed", record=True)
    _assert_fires(emu)
    fixed = run(q, x, backend="lava", precision="fixed", record=True)
    assert np.array_equal(fixed.outputs, emu.outputs)
    for layer in emu.layer_counts:
        np.testing.assert_array_equal(fixed.layer_counts[layer], emu.layer_counts[layer], err_msg=layer)


def wide_fields_graph() -> Graph:
    """Kernel, stride, padding and dilation above 127 (int8 in Lava's own Conv models)."""
    rng = np.random.default_rng(3)
    g = Graph("wide_fields", timesteps=T)
    g.add(Input("in", shape=(1, 2, 600)))
    g.add(Conv2d("long", weight=rng.normal(0.0, 0.4, (4, 1, 1, 130)), stride=(1, 129), padding=(0, 128)),
          ["in"])
    g.add(Conv2d("dilated", weight=rng.normal(0.5, 1.0, (4, 1, 1, 2)), stride=(1, 128), padding=(0, 128),
                 dilation=(1, 130)), ["in"])
    g.add(ir.Add("join"), ["long", "dilated"])
    g.add(Neuron("if1", shape=(4, 2, 6), threshold=1.0), ["join"])
    g.add(Flatten("flat"), ["if1"])
    g.add(Linear("fc", weight=rng.normal(0.0, 1.0, (6, 48))), ["flat"])
    g.add(Neuron("if2", shape=(6,), threshold=2.0), ["fc"])
    g.add(Output("out"), ["if2"])
    return g


def test_kernel_stride_padding_dilation_above_127():
    g = wide_fields_graph()
    x = (np.random.default_rng(4).random((N, T, 1, 2, 600)) < 0.3).astype(float)
    ref = run(g, x, record=True)
    _assert_fires(ref, ("if1", "if2"))
    lava = run(g, x, backend="lava")
    assert np.array_equal(lava.outputs, ref.outputs)
    q, _ = quantize(g, calib=x)
    emu = run(q, x, backend="emulator", precision="fixed", record=True)
    _assert_fires(emu, ("if1", "if2"))
    assert np.array_equal(run(q, x, backend="lava", precision="fixed").outputs, emu.outputs)


def test_activation_above_int16_into_lavas_own_lif():
    """Lava's bit-accurate LIF declares its input port int16; numpy adds the int32 arrays
    the Dense sends, so activations above 2**15 arrive whole (Lava fixed == emulator)."""
    rng = np.random.default_rng(5)
    g = Graph("big_a", timesteps=T)
    g.add(Input("in", shape=(200,)))
    weight = rng.uniform(0.5, 1.0, (8, 200)) * np.linspace(0.2, 2.0, 8)[:, None]
    g.add(Linear("fc", weight=weight), ["in"])
    g.add(Neuron("if", shape=(8,), threshold=300.0), ["fc"])
    g.add(Output("out"), ["if"])
    x = (rng.random((N, T, 200)) < 0.8).astype(float)
    q, _ = quantize(g, calib=x)
    emu = run(q, x, backend="emulator", precision="fixed", record=True)
    assert emu.layer_counts["fc"].max() / T > 2 ** 15
    rate = emu.outputs.mean()
    assert 0.02 <= rate <= 0.5, rate
    assert np.array_equal(run(q, x, backend="lava", precision="fixed").outputs, emu.outputs)


def _quantized_small():
    rng = np.random.default_rng(6)
    g = Graph("small", timesteps=T)
    g.add(Input("in", shape=(1, 4, 4)))
    g.add(Conv2d("conv", weight=rng.normal(0, 1, (2, 1, 3, 3)), padding=1), ["in"])
    g.add(Neuron("if1", shape=(2, 4, 4)), ["conv"])
    g.add(Flatten("flat"), ["if1"])
    g.add(Linear("fc", weight=rng.normal(0, 1, (3, 32))), ["flat"])
    g.add(Neuron("if2", shape=(3,)), ["fc"])
    g.add(Output("out"), ["if2"])
    x = (rng.random((1, T, 1, 4, 4)) < 0.5).astype(float)
    return quantize(g, calib=x)[0], x


@pytest.mark.parametrize("node,field,value,message", [
    ("fc", "weight_exp", 8, "node 'fc' (Linear): fixed-point weight_exp = 8 is outside [-8, 7]"),
    ("fc", "num_weight_bits", 9, "node 'fc' (Linear): fixed-point num_weight_bits = 9 is outside [1, 8]"),
    ("fc", "num_message_bits", 25, "fixed-point num_message_bits = 25 is outside [0, 24]"),
    ("if2", "bias_mant", 5000, "node 'if2' (Neuron): fixed-point bias_mant = 5000 is outside [-4096, 4095]"),
    ("if1", "bias_exp", -1, "node 'if1' (Neuron): fixed-point bias_exp = -1 is outside [0, 7]"),
    ("if1", "du", 4096, "fixed-point du = 4096 is outside [-1, 4095]"),
    ("if1", "dv", -1, "fixed-point dv = -1 is outside [0, 4095]"),
    ("if2", "vth", 2 ** 17, "fixed-point vth = 131072 is outside [0, 131071]"),
    ("conv", "weight", 2 ** 31, "node 'conv' (Conv2d): fixed-point weight = 2147483648 is outside"),
])
def test_values_lava_would_narrow_are_refused_by_name(node, field, value, message):
    from snncompile.errors import SnnCompileError

    q, x = _quantized_small()
    f = q.node(node).fixed
    setattr(f, field, np.full_like(np.asarray(getattr(f, field)), value))
    with pytest.raises(SnnCompileError, match="refuses it rather than wrap it") as err:
        run(q, x, backend="lava", precision="fixed")
    assert message in str(err.value)


def test_conv_partial_sums_beyond_float64_exactness_are_refused():
    from snncompile.errors import SnnCompileError

    q, x = _quantized_small()
    q.input.fixed.num_message_bits = 24
    q.node("conv").fixed.num_message_bits = 24
    q.node("conv").fixed.weight = np.full_like(q.node("conv").fixed.weight, 2 ** 31 - 1)
    with pytest.raises(SnnCompileError, match=r"node 'conv' \(Conv2d\): its partial sums can reach "
                                              r"1\.62e\+17 .* beyond 2\*\*53"):
        run(q, x, backend="lava", precision="fixed")
