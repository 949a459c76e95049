"""Chip cost model (time per step, energy per inference) and the ``map`` / ``energy --chip`` CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from snncompile.chip.cost import activity_from_run, estimate, uniform_activity
from snncompile.chip.mapper import map_graph
from snncompile.cli import main
from snncompile.energy import analyze
from snncompile.frontend import from_torch
from snncompile.ir.onnx_format import save_onnx
from snncompile.targets import reference

from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from test_chip_mapper import chain  # noqa: E402


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), sj_neuron.IFNode(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), sj_neuron.IFNode(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 40), sj_neuron.IFNode(), nn.Linear(40, 4)).eval()
    with torch.no_grad():
        for i in (0, 3, 6):
            model[i].weight.mul_(4)
    graph = from_torch(model, (2, 12, 12), 6, name="costnet")
    x = (np.random.default_rng(1).random((6, 6, 2, 12, 12)) < 0.3).astype(np.float32)
    d = tmp_path_factory.mktemp("chip_cli")
    save_onnx(graph, d / "net.onnx")
    np.savez(d / "data.npz", x=x)
    return d, graph, x, reference.run(graph, x, record=True)


def test_uniform_activity_cost_by_hand():
    """Input(10) -> Linear -> Neuron(20): each input event makes 20 synops on the one core."""
    cmap = map_graph(chain(10, 20), "loihi1")
    p = cmap.profile
    cost = estimate(cmap, uniform_activity(cmap, 0.25, timesteps=8))
    (core,) = cost.cores
    assert core.synops_per_step == pytest.approx(10 * 0.25 * 20)
    assert core.updates_per_step == 20 and core.spikes_per_step == pytest.approx(5.0)
    assert cost.compute_ns == pytest.approx(50 * p.synop_ns + 20 * p.neuron_update_ns)
    assert cost.barrier_ns == pytest.approx(p.barrier_min_ns)          # one tile
    assert cost.step_ns == pytest.approx(cost.compute_ns + cost.barrier_ns)
    e = cost.energy_j
    assert e["synops"] == pytest.approx(8 * 50 * 23.6e-12)
    assert e["neurons"] == pytest.approx(8 * 20 * 81e-12)
    assert e["static"] == pytest.approx(0.104 * 8 * cost.step_ns * 1e-9)
    assert cost.energy_per_inference_j == pytest.approx(sum(e.values()))


def test_messages_hops_and_several_chips_cost_more():
    one = estimate(m := map_graph(chain(16, *([64] * 100)), "loihi1"), uniform_activity(m, 0.1, 4))
    two = estimate(m2 := map_graph(chain(16, *([64] * 130)), "loihi1"), uniform_activity(m2, 0.1, 4))
    assert one.chips == 1 and one.inter_chip_messages_per_step == 0 and one.chip_hop_ns == 0
    assert two.chips == 2 and two.inter_chip_messages_per_step == pytest.approx(64 * 0.1)
    assert two.chip_hop_ns == m2.profile.chip_hop_ns
    assert two.energy_j["static"] > one.energy_j["static"] * 1.9       # two chips' static power
    assert one.messages_per_step == pytest.approx(99 * 64 * 0.1 + 0)    # layer to layer, one core each


def test_per_core_synops_sum_to_the_energy_reports_event_exact_sops(net):
    """Split per core, the synaptic ops are the same events x fan-out the energy report counts, plus
    one op per spike into the max-pool's OR neurons (a 2x2/2 window over 12x12: each spike in one)."""
    _, graph, x, result = net
    report = analyze(graph, result, x=x)
    rates = [la.firing_rate for la in report.layers if la.role == "neuron"]
    assert all(0.02 < r < 0.6 for r in rates), rates                  # the network really fires
    for chip in ("loihi1", "loihi2"):
        cmap = map_graph(graph, chip)
        cost = estimate(cmap, activity_from_run(cmap, result, x))
        T = graph.timesteps
        pooled = next(la.spikes_per_sample for la in report.layers if la.name == "1")
        assert sum(c.synops_per_step for c in cost.cores) * T == pytest.approx(
            report.summary["synops_per_sample"] + pooled, rel=1e-9)
        spikes = sum(la.spikes_per_sample for la in report.layers if la.role == "neuron")
        or_spikes = float(np.asarray(result.layer_counts["2"]).sum()) / len(x)
        assert sum(c.spikes_per_step for c in cost.cores) * T == pytest.approx(spikes + or_spikes, rel=1e-9)


def test_map_cli_json_schema(net):
    d, *_ = net
    res = CliRunner().invoke(main, ["map", str(d / "net.onnx"), "--chip", "loihi1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"chip", "chips", "cores", "layers", "cores_detail", "profile"} <= set(out)
    assert out["chip"] == "loihi1" and out["chips"] == 1 and out["cores"] == len(out["cores_detail"])
    for la in out["layers"]:
        assert {"name", "neurons", "cores", "binding_limit"} <= set(la)
    for c in out["cores_detail"]:
        assert {"chip", "core", "layer", "neurons", "input_axons", "output_axons", "synapse_bits"} <= set(c)
        assert c["synapse_bits"] <= 16384 * 64 and c["input_axons"] <= 4096
    assert sum(la["neurons"] for la in out["layers"]) == sum(b - a for a, b in (c["neurons"] for c in out["cores_detail"]))
    assert out["profile"]["fields"]["neurons_per_core"]["confidence"] == "compiler-observed"


@pytest.mark.parametrize("suffix", [".json", ".md", ".html"])
def test_map_cli_reports(net, suffix, tmp_path):
    d, *_ = net
    out = tmp_path / f"map{suffix}"
    res = CliRunner().invoke(main, ["map", str(d / "net.onnx"), "--chip", "loihi2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "binding limit" in res.output and "mapped" in res.output
    text = out.read_text()
    if suffix == ".json":
        assert json.loads(text)["chip"] == "loihi2"
    elif suffix == ".md":
        assert "## Chip map: loihi2" in text and "compiler-observed" in text
    else:
        assert 'id="plot-core_map"' in text


def test_map_cli_errors_leave_no_file(net, tmp_path):
    d, *_ = net
    out = tmp_path / "map.json"
    res = CliRunner().invoke(main, ["map", str(d / "net.onnx"), "--chip", "loihi3", "-o", str(out)])
    assert res.exit_code == 1 and "error: chip 'loihi3': not a built-in profile" in res.output
    from snncompile.ir.onnx_format import save_onnx as save
    save(chain(4097, 1), tmp_path / "wide.onnx")
    res = CliRunner().invoke(main, ["map", str(tmp_path / "wide.onnx"), "--chip", "loihi1", "-o", str(out)])
    assert res.exit_code == 1
    assert "error: layer 'lif0'" in res.output and "4,097 input axons" in res.output
    assert not out.exists()
    res = CliRunner().invoke(main, ["map", str(d / "net.onnx"), "--chip", "loihi1", "-o", str(tmp_path / "m.txt")])
    assert res.exit_code == 1 and "unknown format" in res.output


def test_energy_cli_chip_section(net, tmp_path):
    d, graph, x, _ = net
    for suffix in (".json", ".md", ".html"):
        out = tmp_path / f"e{suffix}"
        res = CliRunner().invoke(main, ["energy", str(d / "net.onnx"), "-i", str(d / "data.npz"),
                                        "--chip", "loihi1", "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert "energy per inference" in res.output
        text = out.read_text()
        if suffix == ".json":
            rep = json.loads(text)
            cost = rep["chip"]["cost"]
            assert rep["chip"]["chip"] == "loihi1" and cost["timesteps"] == graph.timesteps
            assert cost["energy_per_inference_j"] == pytest.approx(sum(cost["energy_breakdown_j"].values()))
            assert cost["latency_per_inference_s"] == pytest.approx(graph.timesteps * cost["time_per_step_s"])
        elif suffix == ".md":
            assert "## Chip map: loihi1" in text and "latency per inference" in text
        else:
            assert 'id="plot-core_map"' in text and 'id="plot-synops"' in text
    res = CliRunner().invoke(main, ["energy", str(d / "net.onnx"), "-i", str(d / "data.npz"), "--chip", "nope",
                                    "-o", str(tmp_path / "bad.json")])
    assert res.exit_code == 1 and "error: chip 'nope'" in res.output
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("chip", ["loihi1", "loihi2"])
def test_core_links_equal_brute_force_messages(chip):
    """Messages from each source core to each destination core = the spikes of the source neurons
    that feed the destination core (brute force: autograd through the conv)."""
    from snncompile.chip.mapper import core_links
    from test_chip_mapper import brute_fanin, conv_graph
    cmap = map_graph(conv_graph(2, 16, 8, 3, pool=True), chip)
    rng = np.random.default_rng(3)
    weights = {p.name: rng.random(p.n) for p in cmap.network.populations}
    links = core_links(cmap, weights)
    pops = cmap.network.by_name()
    checked = 0
    for core in cmap.cores:
        expect = {}
        for g in pops[core.layer].groups:
            if g.source == "<input>":
                continue
            touched = brute_fanin(g.geometry, core.start, core.stop).ravel() > 0
            for s in cmap.layer_cores(g.source):
                v = float(weights[g.source][s.start:s.stop][touched[s.start:s.stop]].sum())
                if v:
                    expect[s.core] = expect.get(s.core, 0.0) + v
        assert links[core.core] == pytest.approx(expect)
        checked += bool(expect)
    assert checked >= 2


@pytest.mark.parametrize("bad", ["missing.onnx", "truncated.onnx", "text.onnx"])
def test_map_cli_bad_graph_file_is_one_error_line(net, tmp_path, bad):
    d, *_ = net
    good = (d / "net.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.onnx").write_text("# not a model\n" * 10)
    out = tmp_path / "map.json"
    res = CliRunner().invoke(main, ["map", str(tmp_path / bad), "--chip", "loihi1", "-o", str(out)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / bad) in lines[0]
    assert not out.exists()


def test_map_cli_output_into_a_missing_folder(net, tmp_path):
    d, *_ = net
    out = tmp_path / "no_such_folder" / "map.html"
    res = CliRunner().invoke(main, ["map", str(d / "net.onnx"), "--chip", "loihi2", "-o", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.stderr and not out.parent.exists()


def test_chip_section_counts_on_another_backend_when_a_population_was_not_recorded(net):
    from dataclasses import replace
    from snncompile.chip.report import chip_section
    _, graph, x, result = net
    full = chip_section(graph, result, x, "loihi1")
    partial = replace(result, layer_counts={k: v for k, v in result.layer_counts.items() if k != "2"})
    again = chip_section(graph, partial, x, "loihi1")
    assert any("recorded no counts for '2'" in n for n in again["cost"]["notes"])
    assert again["cost"]["energy_per_inference_j"] == pytest.approx(full["cost"]["energy_per_inference_j"])
