"""Energy / SynOp estimator: the worked example of energy.md, cross-checks against
SpikingJelly 2.0's counters on the same models and inputs, conventions, energy models,
and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from snncompile.energy import (Convention, analyze, count_run, data_kind, fanout_map, get_model,
                               load_constants)
from snncompile.errors import SnnCompileError
from snncompile.frontend import from_torch
from snncompile.ir import nodes as ir
from snncompile.targets import reference

from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from spikingjelly.activation_based import functional  # noqa: E402
from spikingjelly.activation_based.op_counter import (DispatchCounterMode, MACCounter,  # noqa: E402
                                                      SynOpCounter)

T = 4


# -- helpers ---------------------------------------------------------------------------
def worked_example_model(seed: int = 0) -> nn.Module:
    """energy.md: Conv(3->8) BN IF Conv(8->16) BN IF MaxPool(2) Linear(1024->10)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), sj_neuron.IFNode(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), sj_neuron.IFNode(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 10)).eval()


def spikingjelly_counts(model: nn.Module, x: np.ndarray) -> tuple[dict, dict]:
    """Per-module SynOps and MACs of SpikingJelly 2.0 for input x ((N,T,*s) or static (N,*s))."""
    model = model.double().eval()
    functional.reset_net(model)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    steps = [xt[:, t] for t in range(xt.shape[1])] if xt.dim() == 5 or xt.dim() == 3 else [xt] * T
    synop, mac = SynOpCounter(), MACCounter()
    with torch.no_grad(), DispatchCounterMode([synop, mac]):
        for x_t in steps:
            model(x_t)
    functional.reset_net(model)
    per_module = lambda c: {k.split(".", 1)[1]: sum(v.values())  # noqa: E731
                            for k, v in c.get_counts().items() if "." in k}
    return per_module(synop), per_module(mac)


def report_for(model, input_shape, x, **kw):
    graph = from_torch(model, input_shape, T)
    result = reference.run(graph, x, record=True)
    return graph, result, analyze(graph, result, x=x, **kw)


def layer(report, name):
    (row,) = [la for la in report.layers if la.name == name]
    return row


@pytest.fixture(scope="module")
def worked():
    model = worked_example_model()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16).numpy()  # real-valued static input: conv1 is MAC
    graph, result, exact = report_for(model, (3, 16, 16), x)
    paper = analyze(graph, result, "paper", x=x)
    return model, graph, result, x, exact, paper


# -- the worked example of energy.md ---------------------------------------------------
def test_worked_example_exact_equals_spikingjelly_synopcounter(worked):
    model, graph, result, x, exact, _ = worked
    sj_synops, sj_macs = spikingjelly_counts(model, x)
    N = len(x)
    assert layer(exact, "0").synops_per_sample == 0           # real input: MACs, no SOPs
    assert layer(exact, "3").synops_per_sample * N == sj_synops["3"]
    assert layer(exact, "8").synops_per_sample * N == sj_synops["8"]
    assert exact.summary["synops_per_sample"] * N == sum(sj_synops.values())
    assert sj_synops["3"] > 0 and sj_synops["8"] > 0           # the example really spikes


def test_worked_example_rate_formula_overcounts_by_the_border_correction(worked):
    _, graph, result, x, exact, paper = worked
    N = len(x)
    c = result.layer_counts["2"].sum(axis=0)                    # (8, 16, 16) spikes into conv2
    interior, edge, corner = 9 * 16, 6 * 16, 4 * 16             # synapses per input position
    corners = c[:, [0, 0, -1, -1], [0, -1, 0, -1]].sum()
    edges = (c[:, 0, 1:-1].sum() + c[:, -1, 1:-1].sum() + c[:, 1:-1, 0].sum() + c[:, 1:-1, -1].sum())
    correction = (edges * (interior - edge) + corners * (interior - corner)) / N
    conv2_rate = layer(paper, "3").synops_per_sample
    assert conv2_rate == pytest.approx(c.sum() / N * interior)   # fr * T * FL
    assert conv2_rate - layer(exact, "3").synops_per_sample == pytest.approx(correction)
    assert correction > 0
    assert layer(paper, "8").synops_per_sample == pytest.approx(layer(exact, "8").synops_per_sample)
    assert paper.summary["synops_per_sample"] > exact.summary["synops_per_sample"]


def test_worked_example_paper_macs_equal_spikingjelly_maccounter(worked):
    model, _, _, x, exact, paper = worked
    _, sj_macs = spikingjelly_counts(model, x)
    N = len(x)
    fl = 3 * 9 * 16 * 16 * 8
    assert layer(paper, "0").macs_per_sample * N == sj_macs["0"] == T * fl * N
    # exact MACs leave out the padding taps of the border
    assert layer(exact, "0").macs_per_sample == T * 3 * 8 * (14 * 14 * 9 + 4 * 14 * 6 + 4 * 4)
    excluded = analyze(worked[1], worked[2], "paper", x=x, first_layer="exclude")
    assert excluded.summary["macs_per_sample"] == 0
    assert excluded.summary["synops_per_sample"] == paper.summary["synops_per_sample"]


def test_report_states_convention_and_constants(worked):
    *_, exact, paper = worked
    d = json.loads(exact.to_json())
    s = d["summary"]
    for key in ("synops_per_sample", "macs_per_sample", "energy_per_sample_j",
                "ann_energy_per_sample_j", "convention", "energy_model"):
        assert key in s
    assert s["convention"] == "exact" and s["energy_model"] == "horowitz45"
    assert d["energy_model"]["mac_pj"] == 4.6 and d["energy_model"]["ac_pj"] == 0.9
    assert "event-exact" in d["convention"]["description"]
    for row in d["layers"]:
        assert {"name", "synops_per_sample", "macs_per_sample", "firing_rate"} <= set(row)
    assert s["energy_per_sample_j"] == pytest.approx(
        (4.6 * s["macs_per_sample"] + 0.9 * s["synops_per_sample"]) * 1e-12)
    assert s["ann_energy_per_sample_j"] == pytest.approx(4.6e-12 * s["ann_macs_per_sample"])
    assert 0 < s["snn_ann_energy_ratio"]
    md = paper.to_markdown()
    assert "rate formula" in md and "4.6 pJ" in md and "| 3 | Conv2d |" in md


def test_firing_rates_overall_and_per_step(worked):
    _, graph, result, x, exact, _ = worked
    row = layer(exact, "5")
    spikes = result.layer_counts["5"]
    assert row.firing_rate == pytest.approx(spikes.sum() / (spikes.size * T))
    assert len(row.firing_rate_per_step) == T
    assert np.mean(row.firing_rate_per_step) == pytest.approx(row.firing_rate)
    assert layer(exact, "3").firing_rate == pytest.approx(layer(exact, "2").firing_rate)  # its input
    assert row.neuron_updates_per_sample == 16 * 16 * 16 * T


# -- three more architectures, cross-checked against SpikingJelly ----------------------
def _mlp_lif():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(40, 64), sj_neuron.LIFNode(tau=2.0), nn.Linear(64, 32),
                      sj_neuron.LIFNode(tau=2.0), nn.Linear(32, 5))
    with torch.no_grad():
        m[0].weight.mul_(3.0)
        m[2].weight.mul_(3.0)
    rng = np.random.default_rng(0)
    return m.eval(), (40,), (rng.random((6, T, 40)) < 0.3).astype(np.float64)


def _strided_grouped_conv():
    torch.manual_seed(4)
    m = nn.Sequential(
        nn.Conv2d(2, 8, 3, stride=2, padding=1), sj_neuron.IFNode(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), sj_neuron.IFNode(),
        nn.Conv2d(8, 4, 2, stride=2), sj_neuron.IFNode(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 10))
    with torch.no_grad():
        for i in (0, 2, 4):
            m[i].weight.mul_(2.5)
    rng = np.random.default_rng(1)
    return m.eval(), (2, 13, 13), (rng.random((5, T, 2, 13, 13)) < 0.4).astype(np.float64)


def _avgpool_conv():
    torch.manual_seed(5)
    m = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), sj_neuron.IFNode(), nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), sj_neuron.IFNode(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 4))
    rng = np.random.default_rng(2)
    return m.eval(), (1, 12, 12), rng.random((3, 1, 12, 12)) * 2.0


ARCHITECTURES = {"mlp_lif": _mlp_lif, "strided_grouped_conv": _strided_grouped_conv,
                 "avgpool_conv": _avgpool_conv}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_exact_synops_equal_spikingjelly_on_more_architectures(arch):
    model, shape, x = ARCHITECTURES[arch]()
    graph, result, rep = report_for(model, shape, x)
    sj_synops, sj_macs = spikingjelly_counts(model, x)
    N = len(x)
    checked = 0
    for row in rep.layers:
        if row.kind in ("Conv2d", "Linear"):
            assert row.synops_per_sample * N == pytest.approx(sj_synops.get(row.name, 0), abs=1e-6), row.name
            checked += row.synops_per_sample > 0
    assert checked >= (1 if arch == "avgpool_conv" else 2)  # after an AvgPool: real values, MACs
    paper = analyze(graph, result, "paper", x=x)
    for row in paper.layers:
        if row.kind in ("Conv2d", "Linear"):
            assert row.macs_per_sample * N == pytest.approx(sj_macs.get(row.name, 0), abs=1e-6), row.name


def test_pooling_synops_are_counted_per_window():
    model, shape, x = _avgpool_conv()
    graph, result, rep = report_for(model, shape, x)
    pool = [r for r in rep.layers if r.kind == "AvgPool2d"][0]
    spikes_in = result.layer_counts[pool.source].sum() / len(x)
    assert pool.synops_per_sample == pytest.approx(spikes_in)  # 2x2 stride 2: one window each
    nxt = [r for r in rep.layers if r.source == pool.name][0]
    assert nxt.input_kind == "real" and nxt.synops_per_sample == 0 and nxt.macs_per_sample > 0


# -- non-binary spikes (SEW ADD) ---------------------------------------------------------
class SewBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.sn0 = sj_neuron.IFNode()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.sn1 = sj_neuron.IFNode()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.sn2 = sj_neuron.IFNode()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        s = self.sn0(self.conv0(x))
        s = s + self.sn1(self.conv1(s))   # SEW ADD: values 0, 1, 2
        return self.fc(self.flat(self.sn2(self.conv2(s))))


def test_nonbinary_spikes_count_k_accumulates_or_dense_macs():
    torch.manual_seed(6)
    model = SewBlock().eval()
    with torch.no_grad():
        model.conv1.weight.mul_(3.0)
    x = np.random.default_rng(3).random((3, 1, 8, 8)) * 3
    graph, result, events = report_for(model, (1, 8, 8), x)
    dense = analyze(graph, result, x=x, nonbinary="dense")
    (add,) = [n.name for n in graph if isinstance(n, ir.Add)]
    assert result.layer_counts[add].max() > T  # some value 2 really occurred
    row_e, row_d = layer(events, "conv2"), layer(dense, "conv2")
    assert row_e.input_kind == "count"
    fan = fanout_map(graph.node("conv2"), (4, 8, 8))
    assert row_e.synops_per_sample == pytest.approx((result.layer_counts[add].sum(0) * fan).sum() / len(x))
    assert row_d.synops_per_sample == 0 and row_d.macs_per_sample == T * fan.sum()
    assert "k accumulates" in events.convention["description"]
    assert any("non-binary" in n for n in events.notes)


# -- fan-out, energy models, published arithmetic --------------------------------------
def test_fanout_map_of_a_strided_padded_conv():
    conv = ir.Conv2d("c", weight=np.zeros((6, 1, 3, 3)), stride=2, padding=1, groups=2)
    fan = fanout_map(conv, (2, 5, 5))
    # output 3x3; along one axis input i is read by outputs o with |2o - i| <= 1
    reads = np.array([1, 2, 1, 2, 1])
    np.testing.assert_array_equal(fan[0], np.outer(reads, reads) * 3)  # 6 out channels / 2 groups
    lin = ir.Linear("l", weight=np.zeros((7, 4)))
    np.testing.assert_array_equal(fanout_map(lin, (4,)), np.full(4, 7.0))


def test_spikingformer_8_512_arithmetic():
    # Spikingformer-8-512 on ImageNet (T=4): 0.347329512 G MAC, 6.51754 G AC -> 7.4635 mJ
    e = get_model("horowitz45").energy_j(macs=0.347329512e9, synops=6.51754e9)
    assert e == pytest.approx(7.4635e-3, abs=5e-8)
    # SpikingResformer-Ti: first layer excluded, 2.73 G SOP -> 2.46 mJ
    assert get_model("horowitz45").energy_j(0, 2.73e9) == pytest.approx(2.457e-3)


def test_loihi1_and_memory_models(worked):
    _, graph, result, x, exact, _ = worked
    counts = count_run(graph, result, data_kind(x))
    loihi = analyze(graph, result, energy_model="loihi1", x=x)
    s = loihi.summary
    neuron_updates = (8 + 16) * 256 * T
    assert s["neuron_updates_per_sample"] == neuron_updates
    expected = (23.6 * s["synops_per_sample"] + 4.6 * s["macs_per_sample"] + 81 * neuron_updates
                + 1.7 * s["spikes_per_sample"]) * 1e-12
    assert s["energy_per_sample_j"] == pytest.approx(expected)
    assert s["spikes_per_sample"] == pytest.approx(sum(n.spikes for n in counts.neurons))
    lem = analyze(graph, result, energy_model="lemaire", x=x)
    assert lem.summary["energy_breakdown_j"]["memory"] > 0
    assert lem.summary["energy_breakdown_j"]["synops"] == pytest.approx(0.1e-12 * s["synops_per_sample"])
    mem = get_model("lemaire").memory
    assert mem.per_byte(8192) == 2.5 and mem.per_byte(20480) == pytest.approx(3.75)
    assert mem.per_byte(10 ** 9) == 25.0


def test_int8_and_fp16_presets():
    assert (get_model("horowitz45-fp16").mac_pj, get_model("horowitz45-fp16").ac_pj) == (1.5, 0.4)
    assert (get_model("horowitz45-int8").mac_pj, get_model("horowitz45-int8").ac_pj) == (0.23, 0.03)


def test_constants_file_json_and_toml(tmp_path, worked):
    _, graph, result, x, *_ = worked
    p = tmp_path / "chip.toml"
    p.write_text('name = "chip"\nbase = "loihi1"\nac_pj = 10.0\n[memory]\nweight_bytes = 1\n')
    m = load_constants(p)
    assert (m.name, m.ac_pj, m.neuron_update_pj, m.memory.weight_bytes) == ("chip", 10.0, 81.0, 1.0)
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"mac_pj": 2.0, "ac_pj": 0.5}))
    rep = analyze(graph, result, x=x, constants=j)
    s = rep.summary
    assert s["energy_per_sample_j"] == pytest.approx((2 * s["macs_per_sample"] + 0.5 * s["synops_per_sample"]) * 1e-12)
    assert rep.energy_model["source"] == "user constants file c.json"


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ('{"ac_pj": -1}', "'ac_pj' must be a non-negative number"),
    ('{"ac_pj": "fast"}', "'ac_pj' must be a non-negative number"),
    ('{"acpj": 1}', "unknown key(s) acpj"),
    ('{"base": "tpu"}', "unknown energy model 'tpu'"),
    ('{"memory": {"sram_pj_per_byte": [[10, 1]]}}', "at least two"),
    ("[1, 2]", "must hold a table"),
])
def test_malformed_constants_file(tmp_path, text, message):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(SnnCompileError) as err:
        load_constants(p)
    assert message in str(err.value) and "bad.json" in str(err.value)


def test_unknown_energy_model_and_convention(worked):
    _, graph, result, x, *_ = worked
    with pytest.raises(SnnCompileError, match="unknown energy model 'tpu'; choose one of horowitz45"):
        analyze(graph, result, energy_model="tpu", x=x)
    with pytest.raises(SnnCompileError, match="unknown convention 'approx'"):
        analyze(graph, result, "approx", x=x)
    with pytest.raises(SnnCompileError, match="unknown first-layer option 'once'"):
        Convention("paper", "once")


def test_run_without_layer_counts_is_refused(worked):
    _, graph, result, x, *_ = worked
    bare = reference.run(graph, x)  # record=False
    with pytest.raises(SnnCompileError, match="did not record per-layer counts for node '2'"):
        analyze(graph, bare, x=x)


def test_input_data_that_does_not_match_the_run_is_refused(worked):
    _, graph, result, x, *_ = worked
    with pytest.raises(SnnCompileError, match="the input data has 3 samples, the run has 4"):
        analyze(graph, result, x=x[:3])
    with pytest.raises(SnnCompileError, match=r"input of shape \(4, 3, 8, 8\) does not fit graph"):
        analyze(graph, result, x=x[:, :, :8, :8])


def test_counts_from_another_graph_are_refused(worked):
    _, graph, result, x, *_ = worked
    bad = reference.run(graph, x, record=True)
    bad.layer_counts["2"] = bad.layer_counts["2"][:, :4]
    with pytest.raises(SnnCompileError, match="recorded counts of node '2' have shape"):
        analyze(graph, bad, x=x)


# -- the architecture matrix (tests/zoo.py), cross-checked against SpikingJelly ---------
def _zoo():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    import zoo
    return zoo


ZOO_MODELS = ["sj_if_soft", "snntorch_synaptic", "sj_mlp", "sj_conv_maxpool", "sj_lif_vreset", "sj_sew", "sj_ms", "sj_plif_multistep",
              "snntorch_loop", "snntorch_step", "norse_loop"]


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_exact_synops_equal_spikingjelly(name):
    """Same model, same inputs: our SOPs on Conv/Linear layers == SpikingJelly's SynOpCounter
    (it counts spike-driven matmul/conv only; pooling windows are ours alone)."""
    zm = _zoo().MODELS[name]
    x = zm.inputs(4, seed=1)
    graph = zm.graph()
    result = reference.run(graph, x, record=True)
    rep = analyze(graph, result, x=x)
    model = zm.build().double()
    counter = SynOpCounter()
    with DispatchCounterMode([counter]):
        zm.torch_outputs(model, x)
    ours = sum(r.synops_per_sample for r in rep.layers if r.kind in ("Conv2d", "Linear"))
    assert ours > 0
    assert ours * len(x) == pytest.approx(counter.get_total(), abs=1e-6)


def test_recurrent_graph_counts_the_recurrent_synapse():
    from snncompile.ir.graph import Graph
    rng = np.random.default_rng(7)
    g = Graph("recurrent", timesteps=T)
    g.add(ir.Input("in", shape=(6,)))
    g.add(ir.Linear("w_in", weight=rng.normal(0, 1.5, (5, 6))), ["in"])
    g.add(ir.Add("sum"), ["w_in"])
    g.add(ir.Neuron("lif", shape=(5,), dv=0.2), ["sum"])
    g.add(ir.Linear("w_rec", weight=rng.normal(0, 0.5, (5, 5))), ["lif"])
    g.add_edge("w_rec", "sum", delay=1)
    g.add(ir.Output("out", mode="spikes"), ["lif"])
    x = (rng.random((3, T, 6)) < 0.5).astype(np.float64)
    result = reference.run(g, x, record=True)
    rep = analyze(g, result, x=x)
    spikes = result.layer_counts["lif"].sum() / 3
    assert spikes > 0
    assert layer(rep, "w_rec").synops_per_sample == pytest.approx(5 * spikes)
    assert layer(rep, "w_in").synops_per_sample == pytest.approx(5 * x.sum() / 3)
    assert layer(rep, "lif").neuron_updates_per_sample == 5 * T


def test_fixed_point_emulator_run_counts_in_spike_units():
    """A fixed run records integer-encoded inputs; the input events still come in spikes."""
    from snncompile.targets import emulator
    zm = _zoo().MODELS["sj_sew"]
    graph, x = zm.graph(), zm.inputs(8, seed=1)
    fixed = analyze(graph, emulator.run(graph, x, precision="fixed", record=True), x=x)
    ref = analyze(graph, reference.run(graph, x, record=True), x=x)
    assert fixed.summary["precision"] == "fixed"
    assert layer(fixed, "stem.0").synops_per_sample == layer(ref, "stem.0").synops_per_sample
    assert layer(fixed, "stem.0").synops_per_sample == pytest.approx(x.sum() / len(x) * 72, rel=0.2)
    for a, b in zip(fixed.layers, ref.layers):
        assert a.synops_per_sample == pytest.approx(b.synops_per_sample, rel=0.05), a.name
        assert a.firing_rate is None or a.firing_rate <= 1.0
    qgraph = emulator.ensure_quantized(graph)
    recorded = emulator.run(qgraph, x, precision="fixed", record=True)
    no_x = analyze(qgraph, recorded, input_kind="binary")   # the Input's scale undoes the encoding
    assert layer(no_x, "stem.0").synops_per_sample == pytest.approx(layer(ref, "stem.0").synops_per_sample)
    with pytest.raises(SnnCompileError, match="pass the input data x, or the quantized graph"):
        analyze(graph, recorded, input_kind="binary")


def test_energy_md_worked_example_figures_from_a_consistent_spike_pattern(worked):
    """energy.md's figures (exact 130,178 = conv2 116,208 + fc 13,970; rate formula 143,570)
    come without their weights and inputs. They imply 900 spikes into conv2 (129,600 / 144),
    a border correction of 13,392 = 48 x 279 edge spikes, and 1,397 spikes into the fc
    layer. Counting such a spike pattern through ``analyze`` gives exactly the doc's numbers."""
    from snncompile.targets.base import RunResult
    _, graph, *_ = worked
    into_conv2 = np.zeros((1, 8, 16, 16))
    edges = [(c, 0, j) for c in range(8) for j in range(1, 15)] + \
            [(c, 15, j) for c in range(8) for j in range(1, 15)] + \
            [(c, i, 0) for c in range(8) for i in range(1, 15)]
    for k in range(279):                       # 279 spikes on non-corner border positions
        into_conv2[(0,) + edges[k % len(edges)]] += 1
    interior = [(c, i, j) for c in range(8) for i in range(1, 15) for j in range(1, 15)]
    for k in range(621):                       # 621 interior spikes: 900 in all
        into_conv2[(0,) + interior[k % len(interior)]] += 1
    pooled = np.zeros(1024)
    pooled[:1397 // T] = T
    pooled[1397 // T] = 1397 % T               # 1,397 spikes into the fc layer
    out_of_if2 = np.zeros((1, 16, 16, 16))
    out_of_if2[0, :, ::2, ::2] = pooled.reshape(16, 8, 8)   # MaxPool(2) of it is `pooled`
    result = RunResult(outputs=np.zeros((1, T, 10)), readout="potential", backend="reference",
                       layer_counts={"2": into_conv2, "5": out_of_if2, "6": pooled.reshape(1, 16, 8, 8),
                                     "7": pooled.reshape(1, 1024)})
    exact = analyze(graph, result, input_kind="real")
    paper = analyze(graph, result, "paper", input_kind="real")
    assert layer(exact, "3").synops_per_sample == 116_208
    assert layer(exact, "8").synops_per_sample == 13_970
    assert exact.summary["synops_per_sample"] == 130_178
    assert paper.summary["synops_per_sample"] == 143_570
