"""The ``quantize`` and ``verify`` commands."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.commands.verify import Column, compare, first_disagreement_line
from snncompile.ir.onnx_format import load_onnx, save_onnx
from snncompile.quantize import is_quantized
from snncompile.targets.base import RunResult

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402


@pytest.fixture()
def files(tmp_path):
    m = zoo.MODELS["sj_mlp"]
    save_onnx(m.graph(), tmp_path / "g.onnx")
    x = m.inputs(12, 0)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 10)
    np.savez(tmp_path / "bad.npz", x=x[:, :, :1])
    return tmp_path


def test_quantize_writes_a_quantized_graph_and_a_report(files):
    out = files / "q.onnx"
    res = CliRunner().invoke(main, ["quantize", str(files / "g.onnx"), "--calib", str(files / "d.npz"),
                                    "-o", str(out), "--report-json", str(files / "r.json")])
    assert res.exit_code == 0, res.output
    assert "calibrated on 12 samples" in res.output and f"wrote {out}" in res.output
    assert is_quantized(load_onnx(out)) and (files / "r.json").read_text().startswith("{")


def test_quantize_bad_calibration_shape_names_the_file_and_writes_nothing(files):
    out = files / "q.onnx"
    res = CliRunner().invoke(main, ["quantize", str(files / "g.onnx"), "--calib", str(files / "bad.npz"),
                                    "-o", str(out)])
    assert res.exit_code == 1
    assert f"error: calibration file '{files / 'bad.npz'}': input of shape (12, 6, 1, 8, 8)" in res.output
    assert not out.exists()


NODES = [("in", "Input"), ("fc", "Linear"), ("lif", "Neuron"), ("out", "Output")]


def _run_of(outputs, fc):
    outputs = np.asarray(outputs, dtype=np.float64)
    fc = np.asarray(fc, dtype=np.float64)
    return RunResult(outputs=outputs, readout="spikes", backend="x", precision="fixed",
                     layer_counts={"fc": fc.sum(1), "lif": outputs.sum(1)},
                     layer_steps={"fc": fc.sum(2), "lif": outputs.sum(2)})


def _spikes_and_current():
    a = np.zeros((3, 4, 2))
    a[0, 1, 0] = a[2, 3, 1] = a[1, 0, 0] = 1
    return a, np.arange(24, dtype=float).reshape(3, 4, 2)


def test_compare_flags_any_difference_between_emulator_and_lava_fixed():
    a, fc = _spikes_and_current()
    ref, emu = Column("reference float", _run_of(a, fc), n=3), Column("emulator fixed", _run_of(a, fc), n=3)
    res = compare(ref, emu, [Column("lava fixed", _run_of(a[:2], fc[:2]), n=2)], None, NODES)
    assert res.exact and res.first is None
    b = a.copy()
    b[1, 2, 0] = 1
    res = compare(ref, emu, [Column("lava fixed", _run_of(b[:2], fc[:2]), n=2)], None, NODES)
    assert not res.exact
    assert any("1/2 samples" in line for line in res.summary)
    assert any(line.startswith("lif") and line.endswith("1/2") for line in res.layers)
    assert first_disagreement_line(res.first) == ("first disagreement: node 'lif' (Neuron): lava fixed vs "
                                                  "emulator, 1/2 samples differ")


def test_compare_names_the_first_node_in_graph_order_not_only_neurons():
    """A synapse differing only in WHEN its current arrives (same total) is caught by the
    per-step sums, and named before the neuron it feeds."""
    a, fc = _spikes_and_current()
    late = fc.copy()
    late[:, [1, 2]] = late[:, [2, 1]]          # same sums over time, shifted steps
    b = a.copy()
    b[0, 3, 1] = 1
    ref, emu = Column("reference float", _run_of(a, fc), n=3), Column("emulator fixed", _run_of(a, fc), n=3)
    res = compare(ref, emu, [Column("lava fixed", _run_of(b, late), n=3)], None, NODES)
    assert (res.first.name, res.first.kind, res.first.differ) == ("fc", "Linear", 3)
    assert any(line.startswith("fc ") and "Linear" in line and line.endswith("0/3") for line in res.layers)
    assert any(line.startswith("lif ") and line.endswith("2/3") for line in res.layers)


def test_compare_names_the_first_float_disagreement_beyond_rounding():
    a, fc = _spikes_and_current()
    ref, emu = Column("reference float", _run_of(a, fc), n=3), Column("emulator fixed", _run_of(a, fc), n=3)
    rounding = Column("lava float", _run_of(a, fc * (1 + 1e-13)), n=3)
    res = compare(ref, emu, [Column("lava fixed", _run_of(a, fc), n=3), rounding], None, NODES)
    assert res.exact and res.float_first is None
    b = a.copy()
    b[2, 0, 1] = 1
    res = compare(ref, emu, [Column("lava fixed", _run_of(a, fc), n=3), Column("lava float", _run_of(b, fc), n=3)],
                  None, NODES)
    assert res.exact
    assert first_disagreement_line(res.float_first) == ("first disagreement: node 'lif' (Neuron): lava float vs "
                                                        "reference float, 1/3 samples differ")


@pytest.mark.lava
def test_verify_runs_every_backend_side_by_side(files):
    res = CliRunner().invoke(main, ["verify", str(files / "g.onnx"), "--input", str(files / "d.npz"),
                                    "--lava-samples", "3"])
    assert "reference float" in res.output and "emulator fixed" in res.output and "lava float" in res.output
    if "not available yet" in res.output:      # until the Lava target has fixed point
        assert res.exit_code == 3 and "Lava fixed point could not be run" in res.output
    else:
        assert res.exit_code == 0, res.output
        assert "emulator == Lava fixed point, spike for spike, on 3 samples" in res.output


@pytest.fixture()
def pooled(tmp_path):
    """A quantized Conv -> IF -> AvgPool2d -> depthwise Conv -> IF -> SumPool2d -> Linear
    -> IF graph that fires (rates checked on the emulator) and its inputs."""
    from snncompile.quantize import quantize
    from snncompile.targets import run
    from test_lava_wide import _inputs, pooled_graph

    x = _inputs()
    q, _ = quantize(pooled_graph(8), calib=x)
    emu = run(q, x, backend="emulator", precision="fixed", record=True)
    for layer in ("if1", "if2", "if3"):
        assert 0.02 <= emu.layer_counts[layer].mean() / x.shape[1] <= 0.5, layer
    save_onnx(q, tmp_path / "pool.onnx")
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path


def _verify(folder, *extra):
    return CliRunner().invoke(main, ["verify", str(folder / "pool.onnx"), "--input", str(folder / "x.npz"),
                                     *extra])


@pytest.mark.lava
def test_verify_compares_every_node_on_a_clean_graph(pooled):
    res = _verify(pooled)
    assert res.exit_code == 0, res.output
    assert "lava float" in res.output and "first disagreement" not in res.output   # neither pair
    for node, kind in [("conv", "Conv2d"), ("pool", "AvgPool2d"), ("dw", "Conv2d"), ("sum", "SumPool2d"),
                       ("fc", "Linear"), ("if3", "Neuron")]:
        assert any(line.startswith(f"{node} ") and kind in line and line.endswith("2/2")
                   for line in res.output.splitlines()), node
    assert "emulator == Lava fixed point, spike for spike, on 2 samples" in res.output


@pytest.mark.lava
def test_verify_names_the_first_node_where_lava_fixed_disagrees(pooled, monkeypatch):
    """Perturb Lava's grouped (pooling and depthwise) Convs by one unit: the first node in
    graph order that differs is the AvgPool, not the neurons after it."""
    from snncompile.targets.lava.procs import conv

    exact = conv.PyWideConvFixed.finish

    def off_by_one_when_grouped(self, acc):
        out = exact(self, acc)
        return out + 1 if self.groups[0] > 1 else out

    monkeypatch.setattr(conv.PyWideConvFixed, "finish", off_by_one_when_grouped)  # forked workers inherit it
    res = _verify(pooled, "--no-lava-float")
    assert res.exit_code == 1, res.output
    assert "first disagreement: node 'pool' (AvgPool2d): lava fixed vs emulator, 2/2 samples differ" in res.output
    assert "emulator and Lava fixed point DISAGREE" in res.output


def test_verify_of_a_graph_lava_cannot_run_compares_the_rest_and_exits_3(tmp_path, monkeypatch):
    """A spiking-transformer graph whose Lava mapping is over the budget (--lava-max-units): Lava
    refuses it before building anything, so verify still prints the reference and emulator
    columns and exits 3, which no usage error (2) shares."""
    from test_onnx_transformer import _attention_graph, _inputs

    monkeypatch.setenv("SNNCOMPILE_LAVA_MAX_UNITS", "")     # restored after the test (the flag sets it)
    save_onnx(_attention_graph(), tmp_path / "attn.onnx")
    np.savez(tmp_path / "d.npz", x=_inputs(6))
    res = CliRunner().invoke(main, ["verify", str(tmp_path / "attn.onnx"), "--input", str(tmp_path / "d.npz"),
                                    "--lava-samples", "2", "--lava-max-units", "10"])
    assert res.exit_code == 3, res.output
    assert "reference float" in res.output and "emulator fixed" in res.output
    assert "Lava fixed point could not be run" in res.output
    assert "its Lava mapping needs" in res.output and "over the budget of 10 " in res.output
