"""Passes on hand-built graphs: BatchNorm / input-gain folding and reset shifts keep the
network's behaviour and leave only canonical node kinds."""
import numpy as np
import pytest

from snncompile.errors import SnnCompileError
from snncompile.ir import Add, Conv2d, Flatten, Graph, Input, Linear, Neuron, Output
from snncompile.passes import Affine, canonicalize, fold_affines, shift_reset_values
from snncompile.targets import run

RNG = np.random.default_rng(0)


def test_affine_after_linear_folds_into_weights_and_bias():
    g = Graph("g", timesteps=3)
    g.add(Input("in", shape=(4,)))
    w, b = RNG.normal(size=(3, 4)), RNG.normal(size=3)
    g.add(Linear("fc", weight=w, bias=b), ["in"])
    scale, shift = np.array([0.5, 2.0, -1.0]), np.array([0.1, 0.2, 0.3])
    g.add(Affine("bn", scale=scale, shift=shift), ["fc"])
    g.add(Neuron("n", shape=(3,)), ["bn"])
    g.add(Output("out"), ["n"])
    out = canonicalize(g)
    assert [n.kind for n in out] == ["Input", "Linear", "Neuron", "Output"]
    fc = out.node("fc")
    np.testing.assert_allclose(fc.weight, w * scale[:, None], rtol=0, atol=1e-15)
    np.testing.assert_allclose(fc.bias, b * scale + shift, rtol=0, atol=1e-15)
    assert g.node("fc").weight is w, "passes work on a copy"


def test_affine_on_the_input_becomes_a_depthwise_conv():
    g = Graph("g", timesteps=2)
    g.add(Input("in", shape=(2, 3, 3)))
    g.add(Affine("gain", scale=np.array([2.0, 3.0]).reshape(2, 1, 1), shift=np.array([0.5, 0.0]).reshape(2, 1, 1)),
          ["in"])
    g.add(Neuron("n", shape=(2, 3, 3), threshold=1e9), ["gain"])
    g.add(Output("out"), ["n"])
    out = fold_affines(g)
    (conv_name,) = [n.name for n in out if isinstance(n, Conv2d)]
    x = RNG.random((1, 2, 2, 3, 3))
    res = run(out, x, record=True)
    expected = (x * np.array([2.0, 3.0]).reshape(1, 1, 2, 1, 1) + np.array([0.5, 0]).reshape(1, 1, 2, 1, 1)).sum(1)
    np.testing.assert_allclose(res.layer_counts[conv_name], expected, rtol=1e-14)


def _ms_graph():
    """Input -> c1 -> add(c2(spikes of n1), c1) -> gain -> n2: c1 is shared by n1 and the add."""
    g = Graph("ms", timesteps=4)
    g.add(Input("in", shape=(3,)))
    g.add(Linear("c1", weight=RNG.normal(size=(3, 3))), ["in"])
    g.add(Neuron("n1", shape=(3,), threshold=0.3), ["c1"])
    g.add(Linear("c2", weight=RNG.normal(size=(3, 3))), ["n1"])
    g.add(Add("add"), ["c2", "c1"])
    g.add(Affine("n2.input_gain", scale=np.asarray(0.5), origin="input_gain"), ["add"])
    g.add(Neuron("n2", shape=(3,), dv=0.5, threshold=0.2), ["n2.input_gain"])
    g.add(Output("out"), ["n2"])
    return g


def test_gain_distributes_over_an_add_and_keeps_shared_synapses_intact():
    g = _ms_graph()
    out = canonicalize(g)
    assert not [n for n in out if isinstance(n, Affine)]
    np.testing.assert_array_equal(out.node("c1").weight, g.node("c1").weight)  # still feeds n1 unscaled
    np.testing.assert_allclose(out.node("c2").weight, 0.5 * g.node("c2").weight, rtol=0, atol=0)
    scaled = [n for n in out.inputs_of("add") if n != "c2"]
    assert scaled == ["c1.input_gain"] and isinstance(out.node("c1.input_gain"), Linear)
    # same behaviour as folding the gain by hand into the neuron's input
    manual = Graph("manual", timesteps=4)
    manual.add(Input("in", shape=(3,)))
    manual.add(Linear("c1", weight=g.node("c1").weight), ["in"])
    manual.add(Neuron("n1", shape=(3,), threshold=0.3), ["c1"])
    manual.add(Linear("c2", weight=g.node("c2").weight * 0.5), ["n1"])
    manual.add(Linear("c1h", weight=g.node("c1").weight * 0.5), ["in"])
    manual.add(Add("add"), ["c2", "c1h"])
    manual.add(Neuron("n2", shape=(3,), dv=0.5, threshold=0.2), ["add"])
    manual.add(Output("out"), ["n2"])
    x = (RNG.random((20, 4, 3)) < 0.5).astype(float)
    a, b = run(out, x).outputs, run(manual, x).outputs
    assert a.sum() > 0 and np.array_equal(a, b)


def test_per_neuron_scale_on_a_conv_population_cannot_fold():
    g = Graph("g", timesteps=2)
    g.add(Input("in", shape=(1, 2, 2)))
    g.add(Affine("a", scale=np.arange(4.0).reshape(1, 2, 2) + 1, origin="input_gain"), ["in"])
    g.add(Neuron("n", shape=(1, 2, 2)), ["a"])
    g.add(Output("out"), ["n"])
    with pytest.raises(SnnCompileError, match=r"node 'in': cannot fold a per-neuron input_gain"):
        fold_affines(g)


@pytest.mark.parametrize("dv", [0.0, 0.3])
def test_reset_shift_keeps_spikes(dv):
    g = Graph("g", timesteps=12)
    g.add(Input("in", shape=(5,)))
    g.add(Linear("fc", weight=RNG.normal(size=(5, 5))), ["in"])
    g.add(Neuron("n", shape=(5,), dv=dv, threshold=0.7, reset_value=-0.4, v_init=-0.4,
                 bias=dv * -0.4, compare=">="), ["fc"])
    g.add(Output("out"), ["n"])
    shifted = shift_reset_values(g)
    node = shifted.node("n")
    assert float(node.reset_value) == 0 and float(node.v_init) == 0
    assert float(node.threshold) == pytest.approx(1.1) and float(node.bias) == 0
    x = (RNG.random((30, 12, 5)) < 0.5).astype(float)
    a, b = run(g, x).outputs, run(shifted, x).outputs
    assert 0.05 < a.mean() < 0.9 and np.array_equal(a, b)


def test_subtract_neurons_drop_their_unused_reset_value():
    g = Graph("g", timesteps=2)
    g.add(Input("in", shape=(2,)))
    g.add(Neuron("n", shape=(2,), reset_mode="subtract", reset_value=0.5), ["in"])
    g.add(Output("out"), ["n"])
    node = shift_reset_values(g).node("n")
    assert float(node.reset_value) == 0 and float(node.threshold) == 1.0


def test_a_graph_without_frontend_nodes_passes_unchanged():
    g = Graph("g", timesteps=2)
    g.add(Input("in", shape=(2,)))
    g.add(Flatten("f"), ["in"])
    g.add(Output("out"), ["f"])
    assert [n.kind for n in canonicalize(g)] == ["Input", "Flatten", "Output"]
