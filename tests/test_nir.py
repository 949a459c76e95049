"""NIR import/export: the NIR-paper LIF benchmark, hand-built graphs with known answers,
round trips through our writer and through snnTorch's and SpikingJelly's exporters."""
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from snncompile.errors import SnnCompileError
from snncompile.interop.nir import read_nir, write_nir
from snncompile.ir import Add, Conv2d, Flatten, Graph, Input, Linear, MaxPool2d, Neuron, Output, SumPool2d
from snncompile.targets import run
from snncompile.targets.reference import Simulator

LIF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nir-paper-lif"
if not LIF_DIR.exists():
    LIF_DIR = Path("/work/shared/data/nir-paper-lif")


def _benchmark():
    float_trace = np.loadtxt(LIF_DIR / "lif_lava_cpu_float.csv", delimiter=",")
    return read_nir(LIF_DIR / "lif_norse.nir", dt=1e-4), float_trace


# -- the NIR-paper LIF benchmark -------------------------------------------------------------
def test_lif_benchmark_spikes_and_voltage_match_the_exact_solution_and_lava_float_trace():
    graph, lava = _benchmark()
    x = lava[:, 0].reshape(1, -1, 1)
    res = run(graph, x)
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == [460, 510, 710, 760]
    exact = np.loadtxt(LIF_DIR / "lif_exact.csv", delimiter=",")
    assert np.nonzero(exact[:, 2])[0].tolist() == [460, 510, 710, 760]
    sim = Simulator(graph, 1)
    v = []
    for t in range(x.shape[1]):
        sim.step(torch.from_numpy(x[:, t]))
        v.append(float(sim.neurons["1"].v[0, 0]))
    # Lava's raw time is one step later (its Dense delivers one step late).
    assert np.max(np.abs(np.array(v[:-1]) - lava[1:, 1])) < 1e-6
    assert np.nonzero(lava[:, 2])[0].tolist() == [461, 511, 711, 761]


def test_lif_benchmark_records_dt_and_r_convention_for_inspect():
    graph, _ = _benchmark()
    assert graph.meta["nir.dt"] == "0.0001" and graph.meta["nir.dt_source"] == "given"
    assert graph.meta["nir.r_convention.1"].startswith("r=1 continuous (input gain dt/tau")
    lif = graph.node("1")
    assert lif.dv == pytest.approx(0.04, rel=1e-6) and float(lif.du) == 1.0
    assert graph.node("0").weight[0, 0] == pytest.approx(0.04, rel=1e-6)  # r*dt/tau folded in


def test_lif_benchmark_without_dt_is_refused_with_a_hint():
    with pytest.raises(SnnCompileError, match=r"lif_norse.nir'.*stores no time step.*--dt"):
        read_nir(LIF_DIR / "lif_norse.nir")


# -- hand-built NIR graphs, checked against the NIR equations stepped by hand -----------------
def _cuba_recurrent_graph(rng):
    """input(3) -> Affine -> [subgraph: CubaLIF(4) <-> Linear w_rec] -> Affine -> LI(2) -> output."""
    w_in, b_in = rng.normal(0, 1.5, (4, 3)), rng.normal(0, .2, 4)
    w_rec = rng.normal(0, 1.0, (4, 4))
    w_out, b_out = rng.normal(0, 1.0, (2, 4)), rng.normal(0, .1, 2)
    dt = 1e-3
    cuba = nir.CubaLIF(tau_syn=np.full(4, 5e-3), tau_mem=np.array([1e-2, 2e-2, 1e-2, 4e-2]),
                       r=np.full(4, 2.0), v_leak=np.array([0., .1, 0., 0.]),
                       v_threshold=np.full(4, 0.3), v_reset=np.zeros(4), w_in=np.full(4, 1.5))
    sub = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "lif": cuba,
                              "w_rec": nir.Linear(weight=w_rec), "output": nir.Output(output_type=np.array([4]))},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    li = nir.LI(tau=np.array([4e-3, 8e-3]), r=np.array([1.0, 3.0]), v_leak=np.zeros(2))
    top = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "fc": nir.Affine(w_in, b_in),
                              "rec": sub, "fc2": nir.Affine(w_out, b_out), "li": li,
                              "output": nir.Output(output_type=np.array([2]))},
                       edges=[("input", "fc"), ("fc", "rec"), ("rec", "fc2"), ("fc2", "li"), ("li", "output")])
    params = dict(w_in=w_in, b_in=b_in, w_rec=w_rec, w_out=w_out, b_out=b_out, cuba=cuba, li=li, dt=dt)
    return top, params


def _euler(x, p):
    """The NIR ODEs, forward Euler, current before membrane, recurrent spikes of step t-1."""
    c, li, dt = p["cuba"], p["li"], p["dt"]
    I = np.zeros(4); v = c.v_leak.copy(); s = np.zeros(4); vo = np.zeros(2)
    spikes, outs = [], []
    for xt in x:
        inp = p["w_in"] @ xt + p["b_in"] + p["w_rec"] @ s
        I = I + dt / c.tau_syn * (-I + c.w_in * inp)
        v = v + dt / c.tau_mem * (c.v_leak - v + c.r * I)
        s = (v > c.v_threshold).astype(float)
        v = np.where(s > 0, c.v_reset, v)
        vo = vo + dt / li.tau * (li.v_leak - vo + li.r * (p["w_out"] @ s + p["b_out"]))
        spikes.append(s); outs.append(vo.copy())
    return np.array(spikes), np.array(outs)


def test_nested_recurrent_cuba_graph_with_li_readout_matches_the_equations(tmp_path):
    rng = np.random.default_rng(3)
    top, p = _cuba_recurrent_graph(rng)
    nir.write(tmp_path / "rec.nir", top)
    graph = read_nir(tmp_path / "rec.nir", dt=p["dt"])
    assert graph.is_recurrent
    assert graph.delay("rec.w_rec", "rec.lif.sum") == 1
    assert graph.output.mode == "potential"
    x = (rng.random((60, 3)) < 0.5).astype(float)
    spikes, v_out = _euler(x, p)
    res = run(graph, x[None], record=True)
    assert spikes.sum() > 10
    np.testing.assert_array_equal(res.layer_counts["rec.lif"][0], spikes.sum(0))
    np.testing.assert_allclose(res.outputs[0], v_out, rtol=1e-9, atol=1e-12)
    assert graph.meta["nir.r_convention.rec.lif"] == "r continuous (input gain r*dt/tau)"


def test_conv1d_threshold_scale_and_if_conventions(tmp_path):
    rng = np.random.default_rng(4)
    w1 = rng.normal(0, 1, (3, 2, 3))
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([2, 10])),
        "conv": nir.Conv1d(input_shape=10, weight=w1, stride=1, padding="same", dilation=1, groups=1,
                           bias=np.zeros(3)),
        "if": nir.IF(r=np.full((3, 10), 1.0), v_threshold=np.full((3, 10), 1.0)),
        "flat": nir.Flatten(input_type={"input": np.array([3, 10])}, start_dim=0, end_dim=-1),
        "scale": nir.Scale(scale=np.linspace(0.5, 2.0, 30)),
        "thr": nir.Threshold(threshold=np.full(30, 0.5)),
        "output": nir.Output(output_type=np.array([30]))},
        edges=[("input", "conv"), ("conv", "if"), ("if", "flat"), ("flat", "scale"), ("scale", "thr"),
               ("thr", "output")])
    nir.write(tmp_path / "c1.nir", g)
    graph = read_nir(tmp_path / "c1.nir")  # nothing depends on dt
    assert graph.meta["nir.dt_source"] == "not needed (no time constants)"
    assert graph.meta["nir.r_convention.if"].startswith("r=1 per step")
    assert graph.input.shape == (2, 1, 10) and graph.meta["nir.input_shape"] == "2,10"
    assert "nir.conv1d.conv" in graph.meta
    x = rng.normal(0, 1, (5, 12, 2, 10))
    res = run(graph, x.reshape(5, 12, 2, 1, 10))
    # by hand: conv1d (same padding), IF per step, scale, threshold
    conv = torch.nn.functional.conv1d(torch.from_numpy(x.reshape(60, 2, 10)), torch.from_numpy(w1), padding=1)
    conv = conv.numpy().reshape(5, 12, 3, 10)
    v = np.zeros((5, 3, 10)); expect = []
    for t in range(12):
        v = v + conv[:, t]
        s = v > 1.0
        v = np.where(s, 0.0, v)
        expect.append((s.reshape(5, 30) * np.linspace(0.5, 2.0, 30)) > 0.5)
    np.testing.assert_array_equal(res.outputs, np.stack(expect, 1).astype(float))
    # SpikingJelly's IF convention r = 1/dt: dt is implied by the file
    g.nodes["if"] = nir.IF(r=np.full((3, 10), 1e4), v_threshold=np.full((3, 10), 1.0))
    nir.write(tmp_path / "c2.nir", g)
    graph2 = read_nir(tmp_path / "c2.nir")
    assert graph2.meta["nir.r_convention.if"].startswith("r=1/dt")
    assert float(graph2.meta["nir.dt"]) == pytest.approx(1e-4)
    np.testing.assert_array_equal(run(graph2, x.reshape(5, 12, 2, 1, 10)).outputs, res.outputs)


# -- IR -> NIR -> IR ---------------------------------------------------------------------------
def _ir_graph(rng, subtract=False):
    g = Graph("rt", timesteps=20)
    g.add(Input("in", shape=(2, 6, 6)))
    g.add(Conv2d("c1", weight=rng.normal(0, .5, (4, 2, 3, 3)), bias=rng.normal(0, .1, 4), padding=1), ["in"])
    g.add(Neuron("n1", shape=(4, 6, 6), dv=0.1, threshold=np.full((4, 1, 1), 0.8)), ["c1"])
    g.add(SumPool2d("p", kernel_size=2, stride=2), ["n1"])
    g.add(Flatten("f"), ["p"])
    g.add(Linear("fc", weight=rng.normal(0, .3, (5, 36))), ["f"])
    g.add(Add("n2.sum"), ["fc"])
    g.add(Neuron("n2", shape=(5,), du=0.3, dv=0.2, threshold=0.5, bias=0.05, v_init=0.25), ["n2.sum"])
    g.add(Linear("rec", weight=rng.normal(0, .3, (5, 5))), ["n2"])
    g.add_edge("rec", "n2.sum", delay=1)
    g.add(Neuron("n3", shape=(5,), threshold=0.5, reset_mode="subtract" if subtract else "zero",
                 compare=">=" if subtract else ">"), ["n2"])
    g.add(Linear("out_fc", weight=rng.normal(0, .5, (3, 5))), ["n3"])
    g.add(Output("out", mode="potential"), ["out_fc"])
    return g.validate()


def test_ir_to_nir_and_back_gives_identical_outputs(tmp_path):
    rng = np.random.default_rng(0)
    g = _ir_graph(rng)
    assert write_nir(g, tmp_path / "rt.nir") == []
    back = read_nir(tmp_path / "rt.nir")  # dt from the file's metadata
    assert back.meta["nir.dt_source"] == "NIR graph metadata 'dt'"
    assert back.delay("rec", "n2.sum") == 1
    x = (rng.random((8, 20, 2, 6, 6)) < 0.3).astype(float)
    a, b = run(g, x, record=True), run(back, x, record=True)
    assert a.layer_counts["n3"].sum() > 0
    np.testing.assert_allclose(b.outputs, a.outputs, rtol=1e-12, atol=1e-12)
    for name in ("n1", "n2", "n3"):
        np.testing.assert_array_equal(b.layer_counts[name], a.layer_counts[name])


def test_nir_export_warns_per_node_about_what_nir_cannot_carry(tmp_path):
    g = _ir_graph(np.random.default_rng(0), subtract=True)
    warnings = write_nir(g, tmp_path / "w.nir")
    assert any(w.startswith("node 'n3' (Neuron): subtractive reset") for w in warnings)
    assert any(w.startswith("node 'n3' (Neuron): fires on v >= threshold") for w in warnings)
    assert len(warnings) == 2


def test_nir_export_refuses_maxpool_naming_the_node(tmp_path):
    g = Graph("mp", timesteps=3)
    g.add(Input("in", shape=(1, 4, 4)))
    g.add(MaxPool2d("pool", kernel_size=2, stride=2), ["in"])
    g.add(Flatten("f"), ["pool"])
    g.add(Output("out"), ["f"])
    with pytest.raises(SnnCompileError, match=r"node 'pool' \(MaxPool2d\): NIR has no MaxPool2d node"):
        write_nir(g, tmp_path / "mp.nir")


# -- bad input ---------------------------------------------------------------------------------
def test_corrupt_missing_and_non_graph_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(SnnCompileError, match=r"NIR file '.*bad.nir' is not a readable NIR graph"):
        read_nir(bad, dt=1e-3)
    with pytest.raises(SnnCompileError, match=r"NIR file '.*nope.nir' does not exist"):
        read_nir(tmp_path / "nope.nir", dt=1e-3)


def test_unsupported_node_is_named(tmp_path):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                            "d": nir.Delay(delay=np.ones(3)),
                            "output": nir.Output(output_type=np.array([3]))},
                     edges=[("input", "d"), ("d", "output")])
    nir.write(tmp_path / "d.nir", g)
    with pytest.raises(SnnCompileError, match=r"node 'd': NIR node type Delay is not supported"):
        read_nir(tmp_path / "d.nir", dt=1e-3)


def test_inconsistent_shapes_are_named(tmp_path):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                            "fc": nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
                            "output": nir.Output(output_type=np.array([2]))},
                     edges=[("input", "fc"), ("fc", "output")], type_check=False)
    nir.write(tmp_path / "s.nir", g)
    with pytest.raises(SnnCompileError, match=r"node 'fc': weight \(2, 4\) does not fit its input of shape \(3,\)"):
        read_nir(tmp_path / "s.nir", dt=1e-3)


def test_time_constant_shorter_than_dt_is_refused(tmp_path):
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([1])), nir.Linear(weight=np.ones((1, 1))),
                               nir.LIF(tau=np.array([1e-4]), r=np.ones(1), v_leak=np.zeros(1),
                                       v_threshold=np.ones(1)), nir.Output(output_type=np.array([1])))
    nir.write(tmp_path / "tau.nir", g)
    with pytest.raises(SnnCompileError, match=r"tau = 0.0001 is shorter than dt = 0.001"):
        read_nir(tmp_path / "tau.nir", dt=1e-3)


@pytest.mark.parametrize("padding, stride, dilation, torch_padding", [
    ("valid", (1, 1), (1, 1), 0), ("same", (1, 1), (2, 1), (2, 1)), (np.array([1, 0]), (2, 1), (1, 1), (1, 0)),
    (2, (1, 2), (1, 1), 2),
])
def test_conv2d_padding_forms_match_torch(tmp_path, padding, stride, dilation, torch_padding):
    rng = np.random.default_rng(7)
    w, b = rng.normal(0, 1, (3, 2, 3, 3)), rng.normal(0, 1, 3)
    conv = nir.Conv2d(input_shape=(7, 8), weight=w, stride=stride, padding=padding, dilation=dilation,
                      groups=1, bias=b)
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2, 7, 8])), "conv": conv,
                            "output": nir.Output(output_type=conv.output_type["output"])},
                     edges=[("input", "conv"), ("conv", "output")], type_check=False)
    nir.write(tmp_path / "conv.nir", g)
    graph = read_nir(tmp_path / "conv.nir")
    x = rng.normal(0, 1, (2, 3, 2, 7, 8))
    expect = torch.nn.functional.conv2d(torch.from_numpy(x.reshape(6, 2, 7, 8)), torch.from_numpy(w),
                                        torch.from_numpy(b), stride, torch_padding, dilation)
    res = run(graph, x)
    assert graph.output.mode == "potential"
    np.testing.assert_allclose(res.outputs.reshape(expect.shape), expect.numpy(), rtol=1e-12)


def test_same_padding_with_an_even_kernel_is_refused(tmp_path):
    conv = nir.Conv2d(input_shape=(6, 6), weight=np.ones((1, 1, 2, 2)), stride=1, padding="same",
                      dilation=1, groups=1, bias=np.zeros(1))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1, 6, 6])), "c": conv,
                            "output": nir.Output(output_type=np.array([1, 6, 6]))},
                     edges=[("input", "c"), ("c", "output")], type_check=False)
    nir.write(tmp_path / "even.nir", g)
    with pytest.raises(SnnCompileError, match=r"node 'c': padding='same' with an even kernel \(2, 2\) pads asymmetrically"):
        read_nir(tmp_path / "even.nir")


def test_integrator_node_accumulates_its_input_as_a_potential(tmp_path):
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([2])), nir.Linear(weight=np.array([[1.0, 2.0], [0.5, 0.0]])),
                               nir.I(r=np.array([1.0, 1.0])), nir.Output(output_type=np.array([2])))
    nir.write(tmp_path / "i.nir", g)
    graph = read_nir(tmp_path / "i.nir")
    assert graph.output.mode == "potential" and graph.meta["nir.r_convention.i"].startswith("r=1 per step")
    x = np.random.default_rng(0).normal(0, 1, (3, 7, 2))
    cur = x @ np.array([[1.0, 2.0], [0.5, 0.0]]).T  # r = 1 per step
    np.testing.assert_allclose(run(graph, x).outputs, np.cumsum(cur, axis=1), rtol=1e-12, atol=1e-12)
