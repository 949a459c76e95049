"""The Lava target (float) against the golden NIR-paper LIF traces, the reference target
and PyTorch eager, on the whole architecture matrix; many samples per Lava run."""
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

import snncompile.targets.lava  # noqa: F401  (installs the import hook before any `lava` import)
import zoo
from snncompile.errors import SnnCompileError
from snncompile.ir import Add, Conv2d, Flatten, Graph, Input, Linear, MaxPool2d, Neuron, Output
from snncompile.ir import nodes as ir
from snncompile.targets import run

pytestmark = pytest.mark.lava

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "nir-paper-lif"
if not GOLDEN.exists():
    GOLDEN = Path("/work/shared/data/nir-paper-lif")
N_SAMPLES = 20


def _golden(name):
    return np.loadtxt(GOLDEN / name, delimiter=",")


def _nir_lif_graph():
    """The NIR-paper LIF with the README's float Lava parameters."""
    g = Graph("nir_lif", timesteps=1000)
    g.add(Input("in", shape=(1,)))
    g.add(Linear("affine", weight=np.array([[0.04]])), ["in"])
    g.add(Neuron("lif", shape=(1,), du=1.0, dv=0.04, threshold=0.1), ["affine"])
    g.add(Output("out"), ["lif"])
    return g


def test_golden_lif_on_the_model_time_axis_spikes_like_the_exact_solution():
    exact = _golden("lif_exact.csv")
    x = _golden("lif_lava_cpu_float.csv")[:, 0]
    res = run(_nir_lif_graph(), x[None, :, None], backend="lava")
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == [460, 510, 710, 760]
    assert np.array_equal(res.outputs[0, :, 0], exact[:, 2])


def test_golden_lif_in_lava_raw_time_reproduces_spikes_and_v_trace(tmp_path):
    """Probe the built network's LIF in Lava's own time: spikes one step later (461...)
    and v within 1e-6 of Lava's float trace on every step."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.monitor.process import Monitor

    from snncompile.targets.lava.builder import build

    trace = _golden("lif_lava_cpu_float.csv")
    graph = _nir_lif_graph()
    net = build(graph, trace[None, :, :1], static=False, steps=1000, folder=str(tmp_path))
    lif = next(p for p in net.processes if p.name == "lif")
    v_mon, s_mon = Monitor(), Monitor()
    v_mon.probe(lif.v, 1000)
    s_mon.probe(lif.s_out, 1000)
    try:
        net.source.run(condition=RunSteps(num_steps=1000), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        v = v_mon.get_data()["lif"]["v"][:, 0]
        s = s_mon.get_data()["lif"]["s_out"][:, 0]
    finally:
        net.source.stop()
    assert np.nonzero(s)[0].tolist() == [461, 511, 711, 761]
    assert np.array_equal(s, trace[:, 2])
    np.testing.assert_allclose(v, trace[:, 1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_architecture_matrix_matches_reference_and_pytorch(name):
    """All samples in ONE Lava network, back to back. Spikes must be identical; a
    potential readout is a float current (summation order may differ: 1e-12)."""
    zm = zoo.MODELS[name]
    graph = zm.graph()
    x = zm.inputs(N_SAMPLES, seed=7)
    lava = run(graph, x, backend="lava")
    ref = run(graph, x)
    eager = zm.torch_outputs(zm.build().double(), x)
    assert lava.outputs.shape == ref.outputs.shape == (N_SAMPLES, zm.timesteps, ref.outputs.shape[2])
    if ref.readout == "spikes":
        assert lava.outputs.sum() > 0
        assert np.array_equal(lava.outputs, ref.outputs)
        assert np.array_equal(lava.outputs, eager)
    else:
        np.testing.assert_allclose(lava.outputs, ref.outputs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lava.outputs, eager, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["sj_sew", "sj_conv_maxpool"])
def test_recorded_layer_counts_match_reference(name):
    zm = zoo.MODELS[name]
    graph = zm.graph()
    x = zm.inputs(4, seed=3)
    lava = run(graph, x, backend="lava", record=True)
    ref = run(graph, x, record=True)
    assert set(lava.layer_counts) == set(ref.layer_counts)
    for layer in ref.layer_counts:
        np.testing.assert_allclose(lava.layer_counts[layer], ref.layer_counts[layer], atol=1e-9,
                                   err_msg=layer)
        np.testing.assert_allclose(lava.layer_steps[layer], ref.layer_steps[layer], atol=1e-9,
                                   err_msg=layer)


def _recurrent_graph():
    """Neuron -> Linear --delay 1--> Add -> Neuron: a recurrent layer (as NIR imports),
    with a bias on the recurrent synapse and a deeper feed-forward branch."""
    rng = np.random.default_rng(0)
    g = Graph("rec", timesteps=7)
    g.add(Input("in", shape=(4,)))
    g.add(Linear("fc", weight=rng.normal(0, 0.8, (5, 4)), bias=np.full(5, 0.05)), ["in"])
    g.add(Add("join"), ["fc"])
    g.add(Neuron("lif", shape=(5,), dv=0.2, threshold=1.0, reset_mode="subtract"), ["join"])
    g.add(Linear("rec", weight=rng.normal(0, 0.6, (5, 5)), bias=np.full(5, 0.1)), ["lif"])
    g.add_edge("rec", "join", delay=1)
    g.add(Output("out"), ["lif"])
    return g


def test_recurrent_edge_matches_reference():
    g = _recurrent_graph()
    x = (np.random.default_rng(1).random((N_SAMPLES, 7, 4)) < 0.5).astype(float)
    ref, lava = run(g, x), run(g, x, backend="lava")
    assert ref.outputs.sum() > 0
    assert np.array_equal(lava.outputs, ref.outputs)


def test_recurrent_edge_fixed_point_matches_emulator():
    from snncompile.quantize import quantize

    x = (np.random.default_rng(1).random((N_SAMPLES, 7, 4)) < 0.5).astype(float)
    qgraph, _ = quantize(_recurrent_graph(), calib=x)
    lava = run(qgraph, x, backend="lava", precision="fixed")
    emu = run(qgraph, x, backend="emulator", precision="fixed")
    assert emu.outputs.sum() > 0
    assert np.array_equal(lava.outputs, emu.outputs)


def test_neuron_features_and_static_input_match_reference():
    """Per-channel thresholds, >=, reset to a value, initial state, current decay with a
    conv bias (our own neuron process), MaxPool over currents, a static input."""
    rng = np.random.default_rng(2)
    g = Graph("feat", timesteps=6)
    g.add(Input("in", shape=(2, 6, 6)))
    g.add(Conv2d("conv", weight=rng.normal(0, 0.7, (3, 2, 3, 3)), bias=np.array([0.1, -0.1, 0.2]),
                 padding=1, stride=(1, 2)), ["in"])
    g.add(MaxPool2d("mp", kernel_size=2, stride=1, padding=1), ["conv"])
    g.add(Neuron("n1", shape=(3, 7, 4), du=0.5, dv=0.1, threshold=np.array([0.6, 0.8, 1.0])[:, None, None],
                 compare=">=", reset_mode="zero", reset_value=np.array([0.1, 0.0, -0.2])[:, None, None],
                 v_init=0.3), ["mp"])
    g.add(Flatten("flat"), ["n1"])
    g.add(Linear("fc", weight=rng.normal(0, 0.5, (4, 84))), ["flat"])
    g.add(Output("out", mode="potential"), ["fc"])
    x = rng.random((N_SAMPLES, 2, 6, 6))
    ref, lava = run(g, x), run(g, x, backend="lava", record=True)
    np.testing.assert_allclose(lava.outputs, ref.outputs, rtol=1e-12, atol=1e-12)
    assert run(g, x, record=True).layer_counts["n1"].sum() > 0
    np.testing.assert_array_equal(lava.layer_counts["n1"], run(g, x, record=True).layer_counts["n1"])


def test_unmappable_node_is_named_in_the_error():
    class Mystery(ir.Node):
        kind = "Mystery"

        def out_shape(self, in_shapes):
            return in_shapes[0]

    g = Graph("bad", timesteps=3)
    g.add(Input("in", shape=(2,)))
    g.add(Mystery("weird"), ["in"])
    g.add(Output("out"), ["weird"])
    with pytest.raises(SnnCompileError, match="node 'weird' \\(Mystery\\): the Lava target has no mapping"):
        run(g, np.zeros((1, 3, 2)), backend="lava")


def test_unsupported_recurrent_edge_is_named():
    g = Graph("rec2", timesteps=3)
    g.add(Input("in", shape=(2,)))
    g.add(Linear("fc", weight=np.eye(2)), ["in"])
    g.add(Add("join"), ["fc"])
    g.add(Neuron("n", shape=(2,)), ["join"])
    g.add(Linear("r1", weight=np.eye(2)), ["n"])
    g.add(Linear("r2", weight=np.eye(2)), ["r1"])
    g.add_edge("r2", "join", delay=1)
    g.add(Output("out"), ["n"])
    with pytest.raises(SnnCompileError, match="recurrent edge 'r2' -> 'join'"):
        run(g, np.zeros((1, 3, 2)), backend="lava")


def test_worker_failure_is_one_clear_error_and_leaves_no_processes(monkeypatch):
    """A ProcessModel that raises mid-run: Lava alone would hang forever; we stop every
    worker and report the worker's exception."""
    from snncompile.targets.lava.procs import models

    original = models.PySnnNeuronFloat.run_spk

    def failing(self):
        if int(self.time_step) == 3:
            raise ValueError("injected neuron failure")
        return original(self)

    monkeypatch.setattr(models.PySnnNeuronFloat, "run_spk", failing)
    g = _recurrent_graph()
    with pytest.raises(SnnCompileError, match="Lava run of graph 'rec' failed: .*injected neuron failure"):
        run(g, np.ones((2, 7, 4)), backend="lava")
    assert not [p for p in multiprocessing.active_children() if "SystemProcess" in p.name]


def _nir_lif_fixed_graph():
    """The same LIF with the README's fixed-point Lava parameters, as quantized IR."""
    from snncompile.ir import fixed as fx

    g = _nir_lif_graph()
    g.input.fixed = fx.InputFixed(num_message_bits=0)
    g.node("affine").fixed = fx.SynapseFixed(weight=np.array([[10]]), num_message_bits=0)
    g.node("lif").fixed = fx.NeuronFixed(du=4095, dv=163, vth=25)
    g.output.fixed = fx.ReadoutFixed(mode="spikes")
    return g


def test_golden_lif_fixed_point_spikes_and_integer_v_trace(tmp_path):
    """Model time: the exact solution's steps; Lava raw time: Lava's fixed_pt trace, the
    integer v identical on every step."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.monitor.process import Monitor

    from snncompile.targets.lava.builder import build

    trace = _golden("lif_lava_cpu_fixed.csv")
    graph = _nir_lif_fixed_graph()
    res = run(graph, trace[None, :, :1], backend="lava", precision="fixed")
    assert np.nonzero(res.outputs[0, :, 0])[0].tolist() == [460, 510, 710, 760]
    net = build(graph, trace[None, :, :1], static=False, steps=1000, folder=str(tmp_path),
                precision="fixed")
    lif = next(p for p in net.processes if p.name == "lif")
    v_mon = Monitor()
    v_mon.probe(lif.v, 1000)
    try:
        net.source.run(condition=RunSteps(num_steps=1000), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = v_mon.get_data()["lif"]["v"][:, 0]
    finally:
        net.source.stop()
    assert np.array_equal(v, trace[:, 1])


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_architecture_matrix_fixed_point_is_bit_exact_with_the_emulator(name):
    """Quantized (calibrated) graphs: Lava's fixed_pt models and our bit-accurate processes
    give exactly the emulator's integers (spikes, or readout integers)."""
    from snncompile.quantize import quantize

    zm = zoo.MODELS[name]
    x = zm.inputs(N_SAMPLES, seed=5)
    qgraph, _ = quantize(zm.graph(), calib=x[:8])
    lava = run(qgraph, x, backend="lava", precision="fixed")
    emu = run(qgraph, x, backend="emulator", precision="fixed")
    assert np.abs(emu.outputs).sum() > 0
    assert np.array_equal(lava.outputs, emu.outputs)


def test_fixed_point_recorded_counts_match_the_emulator():
    from snncompile.quantize import quantize

    zm = zoo.MODELS["sj_sew"]
    x = zm.inputs(4, seed=2)
    qgraph, _ = quantize(zm.graph(), calib=x)
    lava = run(qgraph, x, backend="lava", precision="fixed", record=True)
    emu = run(qgraph, x, backend="emulator", precision="fixed", record=True)
    assert set(lava.layer_counts) == set(emu.layer_counts)
    for layer in emu.layer_counts:
        np.testing.assert_array_equal(lava.layer_counts[layer], emu.layer_counts[layer], err_msg=layer)
        np.testing.assert_array_equal(lava.layer_steps[layer], emu.layer_steps[layer], err_msg=layer)


def test_interrupt_stops_every_worker_and_propagates():
    """Ctrl-C during a long run: KeyboardInterrupt reaches the caller, no worker is left."""
    import signal
    import threading

    g = _recurrent_graph()
    x = np.ones((3000, 7, 4))  # ~21k Lava steps: long enough to be interrupted
    timer = threading.Timer(2.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(g, x, backend="lava")
    finally:
        timer.cancel()
    assert not [p for p in multiprocessing.active_children() if "SystemProcess" in p.name]


def test_runs_after_the_multiprocessing_start_method_was_fixed_elsewhere():
    """torch.fx tracing or training may set the start method before Lava's runtime is
    imported; Lava's own import-time set_start_method('fork') would then fail."""
    import subprocess

    code = ("import multiprocessing as mp; mp.set_start_method('spawn'); import numpy as np; "
            "from test_lava import _recurrent_graph; from snncompile.targets import run; "
            "g = _recurrent_graph(); x = np.ones((2, 7, 4)); "
            "assert np.array_equal(run(g, x, backend='lava').outputs, run(g, x).outputs); print('same')")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("same")


def test_no_samples_is_a_clear_error():
    with pytest.raises(SnnCompileError, match="no input samples"):
        run(_nir_lif_graph(), np.zeros((0, 5, 1)), backend="lava")


@pytest.mark.slow
def test_ctrl_c_on_the_cli_stops_lava_cleanly(tmp_path):
    """Ctrl-C reaches the whole process group: `snncompile run --backend lava` exits 130 with
    one error line, leaves no worker process and no output file."""
    import os
    import signal
    import subprocess
    import time

    import psutil

    from snncompile.ir.onnx_format import save_onnx

    save_onnx(_recurrent_graph(), tmp_path / "g.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((5000, 7, 4)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "snncompile.cli", "run", "g.onnx", "--input", "d.npz", "--backend", "lava",
         "-o", "out.npz"], cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        workers = []
        while time.time() < deadline and len(workers) < 4:  # Lava's workers are running
            time.sleep(0.2)
            workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 4, "Lava never started"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: interrupted (SIGINT); nothing was written"]
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not (tmp_path / "out.npz").exists()


def test_sparse_linear_on_graded_input_uses_lava_sparse_and_matches_reference(tmp_path):
    from lava.proc.sparse.process import Sparse

    from snncompile.targets.lava.builder import build

    rng = np.random.default_rng(4)
    w = rng.normal(0, 1.0, (64, 100)) * (rng.random((64, 100)) < 0.05)
    g = Graph("sparse", timesteps=5)
    g.add(Input("in", shape=(100,)))
    g.add(Linear("fc", weight=w, bias=np.full(64, 0.1)), ["in"])
    g.add(Neuron("n", shape=(64,), dv=0.1, threshold=0.5, reset_mode="subtract"), ["fc"])
    g.add(Output("out"), ["n"])
    x = rng.random((N_SAMPLES, 100))  # static, graded
    net = build(g, x, static=True, steps=5, folder=str(tmp_path))
    assert [type(p) for p in net.processes if p.name == "fc"] == [Sparse]
    ref, lava = run(g, x), run(g, x, backend="lava")
    assert ref.outputs.sum() > 0
    assert np.array_equal(lava.outputs, ref.outputs)
