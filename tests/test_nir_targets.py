"""The NIR-paper LIF benchmark through the public CLI and on every target: spikes at 460,
510, 710, 760 on the model's time axis (Lava's raw time is one step later), v as in the
golden traces of ``shared/data/nir-paper-lif``."""
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.interop.nir import read_nir
from snncompile.ir import fixed as fx
from snncompile.targets import run

LIF_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nir-paper-lif"
if not LIF_DIR.exists():
    LIF_DIR = Path("/work/shared/data/nir-paper-lif")
SPIKES = [460, 510, 710, 760]



def _trace(name):
    return np.loadtxt(LIF_DIR / name, delimiter=",")


def _input():
    return _trace("lif_lava_cpu_float.csv")[:, 0].reshape(1, -1, 1)


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """lif_norse.nir exported to ONNX by the CLI, and its input as DATA.npz."""
    tmp = tmp_path_factory.mktemp("lif")
    _cli("export", LIF_DIR / "lif_norse.nir", "--dt", "1e-4", "-o", tmp / "lif.onnx")
    np.savez(tmp / "x.npz", x=_input())
    return tmp


def test_cli_export_inspect_and_run_on_the_reference_target(exported):
    text = _cli("inspect", exported / "lif.onnx")
    assert "NIR r: r=1 continuous (input gain dt/tau" in text
    _cli("run", exported / "lif.onnx", "--input", exported / "x.npz", "--backend", "reference",
         "-o", exported / "ref.npz")
    with np.load(exported / "ref.npz") as out:
        assert np.nonzero(out["spikes"][0, :, 0])[0].tolist() == SPIKES


def test_cli_export_without_dt_names_the_file_and_exits_nonzero(tmp_path):
    result = CliRunner().invoke(main, ["export", str(LIF_DIR / "lif_norse.nir"), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    assert "lif_norse.nir': NIR is continuous-time and stores no time step" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_cli_writes_nir_and_reads_it_back(exported):
    _cli("export", LIF_DIR / "lif_norse.nir", "--dt", "1e-4", "-o", exported / "again.nir")
    back = read_nir(exported / "again.nir")  # dt from the written metadata
    assert back.meta["nir.r_convention.1"].startswith("r=tau/dt")  # we write snnTorch-style r
    assert np.nonzero(run(back, _input()).outputs[0, :, 0])[0].tolist() == SPIKES


def test_emulator_float_reproduces_spikes_and_the_float_trace():
    from snncompile.targets.reference import Simulator  # the emulator's float walk
    graph = read_nir(LIF_DIR / "lif_norse.nir", dt=1e-4)
    res = run(graph, _input(), backend="emulator", precision="float")
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == SPIKES
    lava = _trace("lif_lava_cpu_float.csv")
    sim, x, v = Simulator(graph, 1), torch.from_numpy(_input()), []
    for t in range(x.shape[1]):
        sim.step(x[:, t])
        v.append(float(sim.neurons["1"].v[0, 0]))
    assert np.max(np.abs(np.array(v[:-1]) - lava[1:, 1])) < 1e-6


def _fixed_benchmark():
    """The imported graph with the integers the README lists for the Lava fixed_pt run."""
    graph = read_nir(LIF_DIR / "lif_norse.nir", dt=1e-4)
    graph.input.fixed = fx.InputFixed(num_message_bits=0)
    graph.node("0").fixed = fx.SynapseFixed(weight=[[10]], weight_exp=0, num_weight_bits=8, scale=256.0)
    graph.node("1").fixed = fx.NeuronFixed(du=4095, dv=163, vth=25, scale=256.0 * 64)
    graph.output.fixed = fx.ReadoutFixed(mode="spikes")
    return graph


def test_emulator_fixed_reproduces_the_lava_fixed_trace_integer_for_integer():
    from snncompile.targets.emulator.integer import IntegerSimulator
    graph = _fixed_benchmark()
    golden = _trace("lif_lava_cpu_fixed.csv")
    sim, x, v, s = IntegerSimulator(graph, 1), torch.from_numpy(_input()), [], []
    for t in range(x.shape[1]):
        s.append(int(sim.step(x[:, t])[0, 0]))
        v.append(int(sim.neurons["1"].v[0, 0]))
    assert np.nonzero(s)[0].tolist() == SPIKES
    np.testing.assert_array_equal(np.array(v[:-1]), golden[1:, 1].astype(np.int64))
    res = run(graph, _input(), backend="emulator", precision="fixed")
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == SPIKES


@pytest.mark.lava
@pytest.mark.slow
def test_cli_run_on_lava_float_gives_the_model_time_spikes(exported):
    _cli("run", exported / "lif.onnx", "--input", exported / "x.npz", "--backend", "lava",
         "-o", exported / "lava.npz")
    with np.load(exported / "lava.npz") as out:
        assert np.nonzero(out["spikes"][0, :, 0])[0].tolist() == SPIKES
    raw = _trace("lif_lava_cpu_float.csv")
    assert np.nonzero(raw[:, 2])[0].tolist() == [t + 1 for t in SPIKES]


@pytest.mark.lava
@pytest.mark.slow
def test_lava_fixed_with_the_readme_integers_gives_the_model_time_spikes():
    res = run(_fixed_benchmark(), _input(), backend="lava", precision="fixed")
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == SPIKES


@pytest.mark.lava
@pytest.mark.slow
def test_recurrent_nested_nir_graph_runs_on_lava_float_like_the_reference(tmp_path):
    import nir
    from test_nir import _cuba_recurrent_graph

    rng = np.random.default_rng(3)
    top, p = _cuba_recurrent_graph(rng)
    nir.write(tmp_path / "rec.nir", top)
    graph = read_nir(tmp_path / "rec.nir", dt=p["dt"])
    x = (rng.random((2, 30, 3)) < 0.5).astype(float)
    ref = run(graph, x, record=True)
    lava = run(graph, x, backend="lava", record=True)
    assert ref.layer_counts["rec.lif"].sum() > 10
    np.testing.assert_array_equal(lava.layer_counts["rec.lif"], ref.layer_counts["rec.lif"])
    np.testing.assert_allclose(lava.outputs, ref.outputs, rtol=1e-9, atol=1e-9)  # LI readout potential


@pytest.mark.lava
@pytest.mark.slow
def test_recurrent_nir_population_quantized_runs_identically_on_emulator_and_lava_fixed(tmp_path):
    import nir

    from snncompile.quantize import quantize

    rng = np.random.default_rng(3)
    lif = nir.LIF(tau=np.full(8, 5e-3), r=np.full(8, 5.0), v_leak=np.zeros(8),
                  v_threshold=np.full(8, 0.5), v_reset=np.zeros(8))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                            "fc": nir.Linear(weight=rng.normal(0, 1.5, (8, 3))), "lif": lif,
                            "w_rec": nir.Linear(weight=rng.normal(0, 0.8, (8, 8))),
                            "output": nir.Output(output_type=np.array([8]))},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    nir.write(tmp_path / "rec.nir", g)
    graph = read_nir(tmp_path / "rec.nir", dt=1e-3)
    assert graph.delay("w_rec", "lif.sum") == 1
    x = (rng.random((3, 25, 3)) < 0.5).astype(float)
    qgraph, _ = quantize(graph, calib=x)
    emulated = run(qgraph, x, backend="emulator", precision="fixed")
    assert 0.05 < emulated.outputs.mean() < 0.6
    np.testing.assert_array_equal(run(qgraph, x, backend="lava", precision="fixed").outputs, emulated.outputs)
