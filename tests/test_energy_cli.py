"""``snncompile energy``: reports in three formats, and clear errors with no output file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.energy import analyze
from snncompile.frontend import from_torch
from snncompile.ir.onnx_format import save_onnx
from snncompile.targets import reference

from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), sj_neuron.IFNode(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(3)
    graph = from_torch(model, (1, 8, 8), 4, name="tiny")
    d = tmp_path_factory.mktemp("energy_cli")
    save_onnx(graph, d / "tiny.onnx")
    x = (np.random.default_rng(0).random((5, 4, 1, 8, 8)) < 0.3).astype(np.float32)
    np.savez(d / "data.npz", x=x, y=np.zeros(5, dtype=np.int64))
    np.savez(d / "wrong.npz", x=np.zeros((5, 4, 2, 8, 8), dtype=np.float32))
    return d, graph, x


def invoke(*args):
    return CliRunner().invoke(main, ["energy", *map(str, args)])


def test_json_report_matches_the_api(files):
    d, graph, x = files
    res = invoke(d / "tiny.onnx", "--input", d / "data.npz", "-o", d / "r.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((d / "r.json").read_text())
    api = analyze(graph, reference.run(graph, x, record=True), x=x)
    assert rep["summary"]["synops_per_sample"] == pytest.approx(api.summary["synops_per_sample"])
    assert rep["summary"]["synops_per_sample"] > 0
    assert rep["summary"]["macs_per_sample"] == 0          # binary input: the first layer is SOPs too
    assert rep["summary"]["input_kind"] == "binary"
    assert [la["name"] for la in rep["layers"]] == ["0", "1", "4"]
    # the terminal table states what was counted and how
    assert "SOPs / sample" in res.output and "exact (first layer per-step" in res.output
    assert "horowitz45: MAC 4.6 pJ; AC/SOP 0.9 pJ" in res.output


def test_markdown_and_html_reports(files):
    d, *_ = files
    res = invoke(d / "tiny.onnx", "-i", d / "data.npz", "--convention", "paper",
                 "--energy-model", "loihi1", "-o", d / "r.md")
    assert res.exit_code == 0, res.output
    md = (d / "r.md").read_text()
    assert "rate formula" in md and "loihi1" in md and "23.6 pJ" in md and "## Layers" in md
    res = invoke(d / "tiny.onnx", "-i", d / "data.npz", "-o", d / "r.html")
    assert res.exit_code == 0, res.output
    page = (d / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.replace("http-equiv", "")


@pytest.mark.parametrize("args, message", [
    (["--input", "wrong.npz"], "input file"),
    (["--input", "data.npz", "--energy-model", "tpu"], "unknown energy model 'tpu'"),
    (["--input", "data.npz", "--constants", "bad.toml"], "is not valid TOML"),
    (["--input", "data.npz", "--constants", "missing.json"], "does not exist"),
])
def test_bad_input_gives_one_error_and_no_report(files, args, message):
    d, *_ = files
    (d / "bad.toml").write_text("mac_pj = = 3\n")
    out = d / "never.json"
    args = [d / a if a.endswith((".npz", ".toml", ".json")) else a for a in args]
    res = invoke(d / "tiny.onnx", *args, "-o", out)
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and message in res.output
    assert not out.exists()
    assert not list(d.glob(".never*"))


def test_mismatched_input_names_file_and_shapes(files):
    d, *_ = files
    res = invoke(d / "tiny.onnx", "--input", d / "wrong.npz")
    assert res.exit_code == 1
    assert "wrong.npz" in res.output and "does not fit graph 'tiny'" in res.output


def test_unknown_report_format(files):
    d, *_ = files
    res = invoke(d / "tiny.onnx", "--input", d / "data.npz", "-o", d / "r.pdf")
    assert res.exit_code == 1 and "unknown format; use .json, .md or .html" in res.output


def test_emulator_fixed_precision_report(files):
    d, graph, x = files
    res = invoke(d / "tiny.onnx", "-i", d / "data.npz", "--backend", "emulator", "--precision", "fixed",
                 "-o", d / "fixed.json")
    assert res.exit_code == 0, res.output
    s = json.loads((d / "fixed.json").read_text())["summary"]
    assert (s["backend"], s["precision"], s["counts_from"]) == ("emulator", "fixed", "emulator")
    ref = analyze(graph, reference.run(graph, x, record=True), x=x).summary
    assert s["synops_per_sample"] == pytest.approx(ref["synops_per_sample"], rel=0.05)
    assert "quantized with default settings" in res.output


def test_counts_needed_from_a_backend(files):
    """What a backend must record for the report; the command counts on the emulator or the
    reference (and says so) when a backend such as Lava records less."""
    from snncompile.energy.counts import needed_counts
    _, graph, x = files
    assert needed_counts(graph, "binary") == ["1", "3"]      # neuron, and the flatten feeding the fc
    bare = reference.run(graph, x)                            # record=False: nothing recorded
    assert [n for n in needed_counts(graph, "binary") if n not in bare.layer_counts] == ["1", "3"]
