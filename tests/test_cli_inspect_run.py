"""`snncompile inspect` and `snncompile run` through click, on hand-built graphs with known answers."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.ir import Add, Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d
from snncompile.ir import fixed as fixed_module
from snncompile.ir.onnx_format import save_onnx
from snncompile.targets import run

RNG = np.random.default_rng(3)


def _conv_net(readout="spikes") -> Graph:
    g = Graph("convnet", timesteps=5)
    g.meta = {"framework": "hand", "nir.r_convention.lif2": "r=tau/dt"}
    g.add(Input("in", shape=(1, 6, 6)))
    g.add(Conv2d("conv", weight=RNG.normal(0.6, 0.3, size=(3, 1, 3, 3)).astype(np.float32), padding=1), ["in"])
    g.add(Neuron("lif1", shape=(3, 6, 6), dv=0.2, threshold=np.array([0.8, 1.0, 1.2]).reshape(3, 1, 1),
                 reset_mode="subtract", source="snntorch.Leaky"), ["conv"])
    g.add(SumPool2d("pool", kernel_size=2, stride=2), ["lif1"])
    g.add(Flatten("flat"), ["pool"])
    g.add(Linear("fc", weight=RNG.normal(0.3, 0.2, size=(4, 27)), bias=np.full(4, 0.05)), ["flat"])
    if readout == "spikes":
        g.add(Add("join"), ["fc"])
        g.add(Neuron("lif2", shape=(4,), compare=">=", reset_mode="zero"), ["join"])
        g.add(Linear("rec", weight=np.eye(4) * 0.3), ["lif2"])
        g.add_edge("rec", "join", delay=1)
        g.add(Output("out"), ["lif2"])
    else:
        g.add(Output("out", mode="potential"), ["fc"])
    return g


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


def _files(tmp_path, g, x, y=None):
    graph_file, data_file = tmp_path / "g.onnx", tmp_path / "data.npz"
    save_onnx(g, graph_file)
    np.savez(data_file, x=x, **({} if y is None else {"y": y}))
    return graph_file, data_file


def test_inspect_table_shows_nodes_settings_and_totals(tmp_path, cli):
    g = _conv_net()
    g.node("fc").fixed = fixed_module.SynapseFixed(weight=np.arange(108).reshape(4, 27) - 50, weight_exp=-1)
    graph_file, _ = _files(tmp_path, g, np.zeros((1, 1, 6, 6)))
    res = cli("inspect", graph_file)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    row = {line.split()[0]: line for line in lines[4:] if line.strip() and not line.startswith(("-", "totals"))}
    assert set(g.order()) <= set(row)
    assert "graph 'convnet': T=5, input (1, 6, 6), output (4,) (spikes readout), 1 recurrent edge(s)" in lines[1]
    assert "meta framework: hand" in res.stdout
    assert row["conv"].split()[1:4] == ["Conv2d", "in", "3x6x6"]
    assert "W 3x1x3x3 float32, stride 1x1, pad 1x1" in row["conv"]
    assert "dv 0.2, thr > 0.8..1.2 (3, 1, 1), reset -= thr, [snntorch.Leaky]" in row["lif1"]
    assert "thr >= 1, reset to 0, NIR r: r=tau/dt" in row["lif2"]
    assert "rec (t-1)" in row["join"]
    assert "fixed: SynapseFixed(weight -50..57 (4, 27), weight_exp -1" in res.stdout
    n_weights = 3 * 9 + 4 * 27 + 4 + 16
    assert lines[-1] == f"totals: 10 nodes, {n_weights} weights, {3 * 36 + 4} neurons"


def test_inspect_json_is_the_same_description(tmp_path, cli):
    graph_file, _ = _files(tmp_path, _conv_net(), np.zeros((1, 1, 6, 6)))
    res = cli("inspect", graph_file, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert [n["name"] for n in info["nodes"]] == _conv_net().order()
    nodes = {n["name"]: n for n in info["nodes"]}
    assert nodes["pool"]["shape"] == [3, 3, 3] and nodes["pool"]["params"]["kernel_size"] == [2, 2]
    assert nodes["conv"]["params"]["weight"] == {"shape": [3, 1, 3, 3], "dtype": "float32"}
    assert nodes["lif1"]["params"]["threshold"] == {"shape": [3, 1, 1], "dtype": "float64", "min": 0.8, "max": 1.2}
    assert nodes["lif1"]["params"]["reset_mode"] == "subtract" and nodes["lif2"]["params"]["compare"] == ">="
    assert nodes["join"]["inputs"] == [{"name": "fc", "delay": 0}, {"name": "rec", "delay": 1}]
    assert nodes["lif2"]["nir_r_convention"] == "r=tau/dt"
    assert info["totals"] == {"nodes": 10, "weights": 155, "neurons": 112}
    assert info["file"] == str(graph_file) and info["timesteps"] == 5 and not info["fixed_point"]


def test_run_writes_counts_pred_spikes_and_accuracy(tmp_path, cli):
    g = _conv_net()
    x = (RNG.random((6, 5, 1, 6, 6)) < 0.5).astype(np.uint8)
    want = run(g, x)
    y = want.pred.copy()
    y[:2] = (y[:2] + 1) % 4  # two wrong labels: accuracy 4/6
    graph_file, data_file = _files(tmp_path, g, x, y)
    out = tmp_path / "out.npz"
    res = cli("run", graph_file, "--input", data_file, "-o", out)
    assert res.exit_code == 0, res.output
    assert "ran 6 sample(s) x 5 steps on reference (float), accuracy 66.67% (4/6)" in res.stdout
    with np.load(out) as d:
        assert want.counts.sum() > 0
        np.testing.assert_array_equal(d["counts"], want.counts)
        np.testing.assert_array_equal(d["pred"], want.pred)
        np.testing.assert_array_equal(d["spikes"], want.outputs)
        assert d["spikes"].shape == (6, 5, 4) and d["spikes"].dtype == np.uint8
        assert float(d["accuracy"]) == pytest.approx(4 / 6)
        assert (str(d["backend"]), str(d["precision"]), str(d["readout"]), int(d["steps"])) == \
            ("reference", "float", "spikes", 5)
        assert "potential" not in d.files


def test_run_potential_readout_static_input_steps_and_default_output(tmp_path, cli, monkeypatch):
    g = _conv_net(readout="potential")
    x = RNG.random((3, 1, 6, 6))
    graph_file, data_file = _files(tmp_path, g, x)
    monkeypatch.chdir(tmp_path)
    res = cli("run", graph_file, "--input", data_file, "--steps", 7)
    assert res.exit_code == 0, res.output
    want = run(g, x, steps=7)
    with np.load(tmp_path / "g.out.npz") as d:
        assert d["potential"].shape == (3, 7, 4) and "spikes" not in d.files and "accuracy" not in d.files
        np.testing.assert_array_equal(d["counts"], want.counts)
        np.testing.assert_allclose(d["potential"][:, -1], want.counts, rtol=1e-12)
        np.testing.assert_allclose(d["potential"][:, 0], want.outputs[:, 0], rtol=1e-12)


def _refused(res, *parts, out=None):
    assert res.exit_code == 1, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), res.stderr
    for part in parts:
        assert part in err[0]
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}*")), "temporary file left behind"


def test_run_refuses_bad_inputs_without_writing(tmp_path, cli):
    g = _conv_net()
    graph_file, data_file = _files(tmp_path, g, np.zeros((2, 5, 1, 6, 6)), np.array([0, 1]))
    out = tmp_path / "out.npz"
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((2, 5, 2, 6, 6)))
    _refused(cli("run", graph_file, "--input", wrong, "-o", out), f"input file '{wrong}'",
             "does not fit graph 'convnet'", out=out)
    onehot = tmp_path / "onehot.npz"
    np.savez(onehot, x=np.zeros((2, 5, 1, 6, 6)), y=np.eye(2))
    _refused(cli("run", graph_file, "--input", onehot, "-o", out), "labels 'y' must be (2,) integer", out=out)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(graph_file.read_bytes()[:200])
    _refused(cli("run", corrupt, "--input", data_file, "-o", out), f"'{corrupt}' is not a readable ONNX file",
             out=out)
    _refused(cli("run", graph_file, "--input", tmp_path / "none.npz", "-o", out), "does not exist", out=out)
    _refused(cli("run", graph_file, "--input", data_file, "-o", tmp_path / "no" / "out.npz"),
             "folder", "does not exist")
    out.write_bytes(b"previous result")
    _refused(cli("run", graph_file, "--input", wrong, "-o", out), "does not fit")
    assert out.read_bytes() == b"previous result"


def test_inspect_refuses_a_corrupted_file(tmp_path, cli):
    path = tmp_path / "bad.onnx"
    path.write_text("not onnx at all")
    _refused(cli("inspect", path), f"'{path}' is not a readable ONNX file")
    _refused(cli("inspect", "--json", tmp_path / "missing.onnx"), "does not exist")


def test_run_fixed_precision_quantizes_an_unquantized_graph(tmp_path, cli):
    from snncompile import quantize
    g = _conv_net()
    x = (RNG.random((2, 5, 1, 6, 6)) < 0.5).astype(np.uint8)
    graph_file, data_file = _files(tmp_path, g, x)
    out = tmp_path / "out.npz"
    res = cli("run", graph_file, "--input", data_file, "--backend", "emulator", "--precision", "fixed", "-o", out)
    assert res.exit_code == 0, res.output
    assert "not quantized; quantized it" in res.stdout
    qgraph, _ = quantize.quantize(g)
    want = run(qgraph, x, backend="emulator", precision="fixed")
    with np.load(out) as d:
        np.testing.assert_array_equal(d["counts"], want.counts)
        assert str(d["precision"]) == "fixed"
