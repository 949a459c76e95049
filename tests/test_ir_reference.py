"""The IR graph and the reference target on hand-built graphs with known answers."""
import numpy as np
import pytest

from snncompile.errors import SnnCompileError
from snncompile.ir import Conv2d, Flatten, Graph, Input, Linear, Neuron, Output
from snncompile.targets import run


def _single_neuron_graph(**neuron):
    g = Graph("one", timesteps=5)
    g.add(Input("in", shape=(1,)))
    g.add(Linear("fc", weight=np.array([[1.0]])), ["in"])
    g.add(Neuron("lif", shape=(1,), **neuron), ["fc"])
    g.add(Output("out"), ["lif"])
    return g


def test_if_neuron_with_subtractive_reset_counts_exactly():
    g = _single_neuron_graph(threshold=1.0, reset_mode="subtract")
    x = np.full((1, 10, 1), 0.3)
    res = run(g, x)
    # v: .3 .6 .9 1.2->.2 .5 .8 1.1->.1 .4 .7 1.0 (not > 1)
    assert res.outputs[0, :, 0].tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert res.counts.tolist() == [[2.0]]


def test_greater_equal_compare_and_zero_reset_to_value():
    g = _single_neuron_graph(threshold=1.0, compare=">=", reset_mode="zero", reset_value=0.5)
    res = run(g, np.full((1, 4, 1), 0.5))
    # v: .5 1.0(spike)->.5 1.0(spike) -> .5 1.0 spike
    assert res.outputs[0, :, 0].tolist() == [0, 1, 1, 1]


def test_current_decay_and_leak():
    g = _single_neuron_graph(du=0.5, dv=0.25, threshold=100.0)
    res = run(g, np.array([[[1.0], [0.0], [0.0]]]), record=True)
    # u: 1, .5, .25 ; v: 1, .75+.5=1.25, .9375+.25=1.1875
    assert res.layer_counts["fc"].tolist() == [[1.0]]
    assert res.outputs.sum() == 0


def test_static_input_uses_graph_timesteps_and_conv_shapes_checked():
    g = Graph("conv", timesteps=3)
    g.add(Input("in", shape=(2, 5, 5)))
    g.add(Conv2d("c", weight=np.ones((3, 2, 3, 3)), padding=1), ["in"])
    g.add(Neuron("n", shape=(3, 5, 5), threshold=np.full((3, 1, 1), 1.0)), ["c"])
    g.add(Flatten("f"), ["n"])
    g.add(Output("out"), ["f"])
    res = run(g, np.ones((4, 2, 5, 5)))
    assert res.outputs.shape == (4, 3, 75)
    assert res.outputs.all()
    with pytest.raises(SnnCompileError, match=r"does not fit graph 'conv'"):
        run(g, np.ones((4, 3, 5, 5)))


def test_shape_mismatch_names_the_node():
    g = Graph("bad")
    g.add(Input("in", shape=(4,)))
    g.add(Linear("fc1", weight=np.ones((3, 5))), ["in"])
    g.add(Output("out"), ["fc1"])
    with pytest.raises(SnnCompileError, match=r"node 'fc1' \(Linear\): expects input shape \(5,\), got \(4,\)"):
        g.validate()


def test_nan_weight_is_refused():
    g = _single_neuron_graph()
    g.node("fc").weight = np.array([[np.nan]])
    with pytest.raises(SnnCompileError, match=r"node 'fc' \(Linear\): parameter 'weight' has 1 NaN/Inf"):
        g.validate()


def test_recurrent_edge_delivers_previous_step():
    # in -> fc -> add(fc, rec) -> lif ; lif -> rec (Linear 1x1, weight 2) --delay--> add
    g = Graph("rec", timesteps=4)
    g.add(Input("in", shape=(1,)))
    g.add(Linear("fc", weight=np.array([[1.0]])), ["in"])
    g.add(Neuron("lif", shape=(1,), threshold=0.5, reset_mode="zero"), ["fc"])
    g.add(Linear("rec", weight=np.array([[0.7]])), ["lif"])
    g.add(Output("out"), ["lif"])
    # make the neuron's input an Add of fc and the delayed recurrent current
    from snncompile.ir import Add
    g.remove("lif"); g.remove("rec"); g.remove("out")
    g.add(Add("sum"), ["fc"])
    g.add(Neuron("lif", shape=(1,), threshold=0.5, reset_mode="zero"), ["sum"])
    g.add(Linear("rec", weight=np.array([[0.7]])), ["lif"])
    g.add_edge("rec", "sum", delay=1)
    g.add(Output("out"), ["lif"])
    assert g.is_recurrent and g.order().index("sum") < g.order().index("lif")
    x = np.array([[[0.6], [0.0], [0.0], [0.0]]])
    res = run(g, x)
    # t0: v=.6 spike; t1: input .7 (recurrent) -> spike; t2: .7 -> spike ...
    assert res.outputs[0, :, 0].tolist() == [1, 1, 1, 1]
    x2 = np.array([[[0.4], [0.0], [0.0], [0.0]]])
    assert run(g, x2).outputs[0, :, 0].tolist() == [0, 0, 0, 0]


def test_cycle_without_delay_is_refused():
    g = _single_neuron_graph()
    g.add_edge("lif", "fc")
    with pytest.raises(SnnCompileError, match="cycle without a delayed"):
        g.order()
