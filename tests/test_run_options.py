"""``snncompile run`` options of issue 13 (item 6): ``--samples``, the readout ``scale``
in OUT.npz, and Lava's own RuntimeWarnings kept from the user."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.ir import Graph, Input, Linear, Neuron, Output
from snncompile.ir.onnx_format import save_onnx
from snncompile.quantize import quantize

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402


def _run(*args):
    res = CliRunner().invoke(main, ["run", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def test_samples_runs_only_the_first_n(tmp_path):
    m = zoo.MODELS["sj_mlp"]
    save_onnx(m.graph(), tmp_path / "g.onnx")
    x = m.inputs(12, 0)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 10)
    _run(tmp_path / "g.onnx", "-i", tmp_path / "d.npz", "-o", tmp_path / "all.npz")
    res = _run(tmp_path / "g.onnx", "-i", tmp_path / "d.npz", "--samples", "3", "-o", tmp_path / "three.npz")
    assert "ran 3 sample(s)" in res.output and "/3)" in res.output
    full, three = np.load(tmp_path / "all.npz"), np.load(tmp_path / "three.npz")
    assert full["spikes"].mean() > 0.01
    assert three["counts"].shape[0] == 3 and three["pred"].shape == (3,)
    np.testing.assert_array_equal(three["spikes"], full["spikes"][:3])


def test_scale_turns_fixed_point_readouts_into_float_logits(tmp_path):
    m = zoo.MODELS["sj_conv_maxpool"]           # bare Linear readout (potential)
    x = m.inputs(6, 1)
    q, _ = quantize(m.graph(), calib=x)
    save_onnx(q, tmp_path / "q.onnx")
    np.savez(tmp_path / "d.npz", x=x)
    _run(tmp_path / "q.onnx", "-i", tmp_path / "d.npz", "-o", tmp_path / "float.npz")
    _run(tmp_path / "q.onnx", "-i", tmp_path / "d.npz", "--backend", "emulator", "--precision", "fixed",
         "-o", tmp_path / "fixed.npz")
    flt, fix = np.load(tmp_path / "float.npz"), np.load(tmp_path / "fixed.npz")
    assert float(flt["scale"]) == 1.0
    assert float(fix["scale"]) == q.output.fixed.scale != 1.0
    logits = fix["counts"] / fix["scale"]
    assert np.abs(flt["counts"]).max() > 0.1
    # in float units: the same magnitude and direction as the float logits (quantization
    # flips a few upstream spikes, so not equal; a wrong scale is off by powers of 2)
    ratio = np.linalg.norm(logits) / np.linalg.norm(flt["counts"])
    assert 0.9 < ratio < 1.1
    assert np.corrcoef(logits.ravel(), flt["counts"].ravel())[0, 1] > 0.9
    np.testing.assert_allclose(fix["potential"][:, -1] / fix["scale"], logits)


def _overflowing_graph(folder: Path) -> None:
    """Inputs of 1e308 overflow to inf in the Dense, so Lava's own float LIF computes
    ``inf * 0`` and numpy warns in every worker (lava/proc/lif/models.py)."""
    g = Graph("huge", timesteps=3)
    g.add(Input("in", shape=(4,)))
    g.add(Linear("fc", weight=np.full((2, 4), 10.0)), ["in"])
    g.add(Neuron("lif", shape=(2,), dv=0.5, threshold=1.0), ["fc"])
    g.add(Output("out"), ["lif"])
    save_onnx(g, folder / "huge.onnx")
    np.savez(folder / "huge.npz", x=np.full((2, 3, 4), 1e308))


_CLI = ("import sys; from snncompile.cli import main; sys.argv = ['snncompile'] + sys.argv[1:]; "
        "main()")


@pytest.mark.lava
def test_run_on_lava_prints_no_runtime_warning(tmp_path):
    _overflowing_graph(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _CLI, "run", "huge.onnx", "-i", "huge.npz",
                           "--backend", "lava", "-o", "o.npz"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 sample(s) x 3 steps on lava" in proc.stdout
    assert "Warning" not in proc.stderr + proc.stdout


@pytest.mark.lava
@pytest.mark.slow
def test_without_the_filter_lava_would_print_runtime_warnings(tmp_path):
    """The control for the test above: the same run with the filter switched off warns."""
    _overflowing_graph(tmp_path)
    code = ("import contextlib, snncompile.targets.lava.runner as r; "
            "r.quiet_lava_warnings = contextlib.nullcontext; " + _CLI)
    proc = subprocess.run([sys.executable, "-c", code, "run", "huge.onnx", "-i", "huge.npz",
                           "--backend", "lava", "-o", "o.npz"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lava/proc/lif/models.py" in proc.stderr and "RuntimeWarning: invalid value" in proc.stderr


def test_counts_are_the_last_step_of_the_running_sum_exactly():
    """``RunResult.counts`` (OUT.npz ``counts``) sums the steps in order, so that it equals the
    last step of ``potential`` (their running sum) to the bit, also where ``np.sum`` would
    sum a long single-output axis pairwise (one output, 300 steps of float potentials)."""
    from snncompile.targets.base import RunResult
    rng = np.random.default_rng(0)
    for shape in [(5, 8, 10), (4, 300, 1), (3, 1, 2)]:
        outputs = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)
        result = RunResult(outputs=outputs, readout="potential", backend="reference")
        np.testing.assert_array_equal(result.counts, np.cumsum(outputs, axis=1)[:, -1])
    spikes = (rng.random((6, 9, 4)) < 0.3).astype(np.float64)
    np.testing.assert_array_equal(RunResult(outputs=spikes, readout="spikes", backend="emulator").counts,
                                  spikes.sum(axis=1))
