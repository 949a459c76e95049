"""Energy of the spiking-transformer kinds (issue 11, item 6): exact SynOps of a hand-built
attention graph equal SpikingJelly 2.0's ``SynOpCounter`` on the same torch computation;
masks, reductions and scales in their own op classes; the spikingformer and sdt conventions
on a known spike pattern with hand-computed figures; streaming chunk sums stay exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncompile.energy import analyze
from snncompile.energy.analysis import report_from_record
from snncompile.energy.counts import CountRecord, record_run
from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.operands import mark_operands
from snncompile.targets import reference

from spikingjelly.activation_based import functional, neuron as sj_neuron
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

T = 4
C, NTOK, HEADS = 8, 16, 2
D = C // HEADS


def _row(report, name):
    (row,) = [la for la in report.layers if la.name == name]
    return row


# -- a hand-built attention block and the same computation in torch ----------------------
def attention_graph(seed: int = 0) -> Graph:
    """Spikformer-style SSA ``((q @ k^T) * 0.125) @ v`` on a (C, N, 1) token layout with 1x1
    convs, a spike add feeding a conv (a count input), an SDT-style mask branch
    (``k * v`` -> token sum -> LIF -> ``q * kv``), and a Linear head on a spike sum."""
    rng = np.random.default_rng(seed)
    w = lambda co, ci: rng.normal(0, 0.9, (co, ci, 1, 1))  # noqa: E731
    g = Graph("attention", timesteps=T)
    g.add(ir.Input("x", shape=(C, NTOK, 1)))
    for name in ("q", "k", "v"):
        g.add(ir.Conv2d(f"{name}_conv", weight=w(C, C), bias=rng.normal(0.2, 0.2, C)), ["x"])
        g.add(ir.Neuron(f"{name}_lif", shape=(C, NTOK, 1), compare=">="), [f"{name}_conv"])
        g.add(ir.Reshape(f"{name}_heads", shape=(HEADS, D, NTOK)), [f"{name}_lif"])
    g.add(ir.Permute("q_t", perm=(0, 2, 1)), ["q_heads"])                   # (h, N, d)
    g.add(ir.Permute("v_t", perm=(0, 2, 1)), ["v_heads"])                   # (h, N, d)
    g.add(ir.MatMul("qk", lhs="spike", rhs="spike"), ["q_t", "k_heads"])    # (h, N, N)
    g.add(ir.Scale("qk_scale", weight=np.array(0.125)), ["qk"])
    g.add(ir.MatMul("attn_v", lhs="real", rhs="spike"), ["qk_scale", "v_t"])  # (h, N, d)
    g.add(ir.Neuron("attn_lif", shape=(HEADS, NTOK, D), compare=">=", threshold=0.5), ["attn_v"])
    g.add(ir.Permute("attn_back", perm=(0, 2, 1)), ["attn_lif"])
    g.add(ir.Reshape("attn_tokens", shape=(C, NTOK, 1)), ["attn_back"])
    g.add(ir.Conv2d("proj_conv", weight=w(C, C), bias=np.full(C, 0.3)), ["attn_tokens"])
    g.add(ir.Neuron("proj_lif", shape=(C, NTOK, 1), compare=">="), ["proj_conv"])
    g.add(ir.Add("res"), ["proj_lif", "v_lif"])                             # spike add: 0/1/2
    g.add(ir.Conv2d("fc_conv", weight=w(C, C), bias=np.full(C, 0.2)), ["res"])
    g.add(ir.Neuron("fc_lif", shape=(C, NTOK, 1), compare=">="), ["fc_conv"])
    g.add(ir.Mul("kv", lhs="spike", rhs="spike"), ["k_lif", "v_lif"])
    g.add(ir.ReduceSum("kv_sum", axis=1, keepdim=True), ["kv"])             # (C, 1, 1)
    g.add(ir.Neuron("kv_lif", shape=(C, 1, 1), compare=">=", threshold=0.5), ["kv_sum"])
    g.add(ir.Mul("q_kv", lhs="spike", rhs="spike"), ["q_lif", "kv_lif"])    # broadcast over N
    g.add(ir.Add("merge"), ["fc_lif", "q_kv"])
    g.add(ir.Flatten("flat"), ["merge"])
    g.add(ir.Linear("head", weight=rng.normal(0, 0.3, (10, C * NTOK)), bias=np.zeros(10)), ["flat"])
    g.add(ir.Output("out", mode="potential"), ["head"])
    return mark_operands(g.validate())


class TorchAttention(torch.nn.Module):
    """The same per-step computation with torch ops and SpikingJelly IF neurons."""

    def __init__(self, g: Graph):
        super().__init__()
        p = lambda a: torch.nn.Parameter(torch.from_numpy(np.asarray(a, dtype=np.float64)))  # noqa: E731
        self.w = torch.nn.ParameterDict({n: p(g.node(n).weight) for n in
                                         ("q_conv", "k_conv", "v_conv", "proj_conv", "fc_conv", "head")})
        self.b = torch.nn.ParameterDict({n: p(g.node(n).bias) for n in self.w})
        self.lif = torch.nn.ModuleDict({n: sj_neuron.IFNode(v_threshold=float(g.node(n).threshold))
                                        for n in ("q_lif", "k_lif", "v_lif", "attn_lif", "proj_lif",
                                                  "fc_lif", "kv_lif")})

    def conv(self, name, x):
        return F.conv2d(x, self.w[name], self.b[name])

    def forward(self, x):                      # x: (B, C, N, 1)
        B = x.shape[0]
        q, k, v = (self.lif[f"{n}_lif"](self.conv(f"{n}_conv", x)) for n in "qkv")
        heads = lambda s: s.reshape(B, HEADS, D, NTOK)  # noqa: E731
        attn = (heads(q).transpose(-2, -1) @ heads(k)) * 0.125
        a = self.lif["attn_lif"](attn @ heads(v).transpose(-2, -1))
        a = a.transpose(-2, -1).reshape(B, C, NTOK, 1)
        res = self.lif["proj_lif"](self.conv("proj_conv", a)) + v
        fc = self.lif["fc_lif"](self.conv("fc_conv", res))
        kv = self.lif["kv_lif"](k.mul(v).sum(dim=2, keepdim=True))
        merged = fc + q.mul(kv)
        return F.linear(merged.flatten(1), self.w["head"], self.b["head"]), res, merged


def synopcounter_total(model, x) -> tuple[float, np.ndarray, np.ndarray]:
    """SynOpCounter's total over all steps, and the largest values of the two spike sums."""
    functional.reset_net(model)
    counter = SynOpCounter()
    res_max = merged_max = 0.0
    with torch.no_grad(), DispatchCounterMode([counter]):
        for t in range(x.shape[1]):
            _, res, merged = model(torch.from_numpy(x[:, t]))
            res_max, merged_max = max(res_max, float(res.max())), max(merged_max, float(merged.max()))
    return counter.get_total(), res_max, merged_max


@pytest.fixture(scope="module")
def attention():
    g = attention_graph()
    rng = np.random.default_rng(1)
    x = rng.normal(0.6, 1.0, (3, T, C, NTOK, 1))
    result = reference.run(g, x, record=True)
    return g, x, result, analyze(g, result, x=x)


def test_firing_rates_are_in_range(attention):
    g, x, result, report = attention
    for name in ("q_lif", "k_lif", "v_lif", "attn_lif", "proj_lif", "fc_lif", "kv_lif"):
        rate = _row(report, name).firing_rate
        assert 0.02 < rate < 0.8, (name, rate)


def test_exact_spike_synops_equal_synopcounter(attention):
    g, x, result, report = attention
    total, res_max, merged_max = synopcounter_total(TorchAttention(g).double().eval(), x)
    # SynOpCounter counts a layer on a spike sum only if the sum is binary: these are not
    assert res_max >= 2 and merged_max >= 2
    s = report.summary
    N = len(x)
    assert s["spike_synops_per_sample"] * N == pytest.approx(total, rel=1e-9)
    assert total > 0
    # the spike sums' layers are in their own class, not in SynOpCounter's scope
    assert s["count_synops_per_sample"] == pytest.approx(
        _row(report, "fc_conv").synops_per_sample + _row(report, "head").synops_per_sample)
    assert s["synops_per_sample"] == pytest.approx(s["spike_synops_per_sample"]
                                                   + s["count_synops_per_sample"])


def test_matmul_counts_coincidences_and_nnz_times_other_dim(attention):
    g, x, result, report = attention
    N = len(x)
    q = result.layer_counts  # per-sample sums over time
    # spike x spike: sum over steps of the 0/1 product = the recorded product sum
    assert _row(report, "qk").synops_per_sample == pytest.approx(q["qk"].sum() / N)
    # real x spike: nnz(v) times the rows of the real operand (N tokens)
    assert _row(report, "attn_v").synops_per_sample == pytest.approx(q["v_lif"].sum() / N * NTOK)
    assert _row(report, "attn_v").input_kind == "real x binary"
    assert _row(report, "qk").input_kind == "binary x binary"


def test_masks_reductions_scales_are_their_own_classes(attention):
    g, x, result, report = attention
    N = len(x)
    rc = {k: v.sum() / N for k, v in result.layer_counts.items()}
    kv, kv_sum, q_kv, scale = (_row(report, n) for n in ("kv", "kv_sum", "q_kv", "qk_scale"))
    classes = (kv.op_class, kv_sum.op_class, q_kv.op_class, scale.op_class)
    assert classes == ("mask", "reduce", "mask", "scale")
    assert kv.ops_per_sample == pytest.approx(rc["k_lif"] + rc["v_lif"])      # an AND: both inputs' events
    assert q_kv.ops_per_sample == pytest.approx(rc["q_lif"] + rc["kv_lif"] * NTOK)  # kv: N outputs
    assert kv_sum.ops_per_sample == pytest.approx(rc["kv"])                       # one add per event
    assert scale.ops_per_sample == pytest.approx(rc["qk"])                        # one op per event
    for row in (kv, kv_sum, q_kv, scale):
        assert row.synops_per_sample == 0 and row.ops_per_sample > 0
    s = report.summary
    assert s["ops_per_sample_by_class"] == pytest.approx(
        {"mask": kv.ops_per_sample + q_kv.ops_per_sample, "reduce": kv_sum.ops_per_sample,
         "scale": scale.ops_per_sample})
    b = s["energy_breakdown_j"]
    assert b["masks"] == pytest.approx(0.9e-12 * s["ops_per_sample_by_class"]["mask"])
    assert b["reductions"] == pytest.approx(0.9e-12 * kv_sum.ops_per_sample)
    assert b["scales"] == pytest.approx(0.9e-12 * scale.ops_per_sample)
    assert s["energy_per_sample_j"] == pytest.approx(sum(b.values()))
    # said in every output
    md = report.to_markdown()
    assert "SynOpCounter counts none of them" in md and "routing" in md and "(mask)" in md
    assert '"op_class": "mask"' in report.to_json() and "(mask)" in report.to_html()
    lemaire = analyze(g, result, x=x, energy_model="lemaire")
    assert any("memory traffic of MatMul" in n for n in lemaire.notes)
    masks = lemaire.summary["energy_breakdown_j"]["masks"]
    assert masks == pytest.approx(0.1e-12 * s["ops_per_sample_by_class"]["mask"])      # INT32 add 0.1 pJ
    # layouts get no row: they cost nothing
    assert not [la for la in report.layers if la.kind in ("Reshape", "Permute", "Flatten")]


def test_streaming_chunks_merge_to_the_same_report(attention):
    g, x, result, report = attention
    parts = [record_run(g, reference.run(g, x[i:i + 1], record=True), x[i:i + 1]) for i in range(len(x))]
    assert parts[0].sums["qk"].dtype == np.int64          # exact integer sums, mergeable
    merged = report_from_record(g, CountRecord.merge(parts))
    for key in ("synops_per_sample", "spike_synops_per_sample", "count_synops_per_sample",
                "ops_per_sample_by_class", "energy_per_sample_j"):
        assert merged.summary[key] == pytest.approx(report.summary[key], rel=1e-12)


# -- the conventions on a known spike pattern ----------------------------------------------
def known_graph() -> Graph:
    """Binary input (3, 2, 4): streams q, k, v (one head, N=2 tokens, d=4), ``q @ (k^T @ v)``
    scaled, a mask ``q * k`` and its token sum, and a Linear on q."""
    g = Graph("known", timesteps=2)
    g.add(ir.Input("x", shape=(3, 2, 4)))
    for i, name in enumerate("qkv"):
        g.add(ir.Slice(name, axis=0, start=i, stop=i + 1), ["x"])          # (1, 2, 4)
    g.add(ir.Permute("k_t", perm=(0, 2, 1)), ["k"])                       # (1, 4, 2)
    g.add(ir.MatMul("kv", lhs="spike", rhs="spike"), ["k_t", "v"])        # (1, 4, 4)
    g.add(ir.MatMul("qkv", lhs="spike", rhs="count"), ["q", "kv"])        # (1, 2, 4)
    g.add(ir.Scale("scale", weight=np.array(0.125)), ["qkv"])
    g.add(ir.Neuron("attn_lif", shape=(1, 2, 4), compare=">=", threshold=0.1), ["scale"])
    g.add(ir.Mul("mask", lhs="spike", rhs="spike"), ["q", "k"])
    g.add(ir.ReduceSum("tok", axis=1, keepdim=True), ["mask"])            # (1, 1, 4)
    g.add(ir.Neuron("tok_lif", shape=(1, 1, 4), compare=">=", threshold=0.5), ["tok"])
    g.add(ir.Mul("gate", lhs="spike", rhs="spike"), ["attn_lif", "tok_lif"])
    g.add(ir.Flatten("flat"), ["gate"])
    g.add(ir.Flatten("q_flat"), ["q"])
    g.add(ir.Linear("fc", weight=np.ones((3, 8)), bias=None), ["q_flat"])
    g.add(ir.Neuron("fc_lif", shape=(3,), compare=">="), ["fc"])
    g.add(ir.Flatten("fc_flat"), ["fc_lif"])
    g.add(ir.Linear("head", weight=np.ones((2, 8)), bias=None), ["flat"])
    g.add(ir.Linear("head2", weight=np.ones((2, 3)), bias=None), ["fc_flat"])
    g.add(ir.Add("out_add"), ["head", "head2"])
    g.add(ir.Output("out", mode="potential"), ["out_add"])
    return mark_operands(g.validate())


#: one sample, T=2; per step rows are the tokens
Q = np.array([[[1, 0, 1, 0], [0, 1, 1, 0]], [[1, 1, 0, 0], [0, 0, 0, 1]]])   # (T, N, d): 7 spikes
K = np.array([[[1, 1, 0, 0], [0, 1, 0, 0]], [[0, 0, 1, 1], [1, 0, 0, 0]]])   # 6 spikes
V = np.array([[[0, 1, 1, 0], [1, 1, 0, 0]], [[1, 0, 0, 1], [0, 0, 1, 0]]])   # 7 spikes


@pytest.fixture(scope="module")
def known():
    g = known_graph()
    x = np.stack([Q, K, V], axis=1)[None].astype(np.float64)                  # (1, T, 3, 2, 4)
    result = reference.run(g, x, record=True)
    return g, x, result


def test_known_graph_exact_figures(known):
    g, x, result = known
    r = analyze(g, result, "exact", x=x)
    # k^T @ v is a sum over tokens of outer products: sum_n |k_t[n]| * |v_t[n]| coincidences per step
    coinc = sum(int((K[t].T @ V[t]).sum()) for t in range(2))
    assert coinc == (2 * 2 + 1 * 2) + (2 * 2 + 1 * 1) == 11
    assert _row(r, "kv").synops_per_sample == coinc
    assert _row(r, "qkv").synops_per_sample == 7 * 4                  # nnz(q) x m (q spikes x counts)
    assert _row(r, "mask").ops_per_sample == 7 + 6                    # AND: both operands' events
    assert _row(r, "tok").ops_per_sample == int((Q * K).sum()) == 1 + 1   # the mask's events
    assert _row(r, "scale").ops_per_sample == sum(int((Q[t] @ K[t].T @ V[t]).sum()) for t in range(2))
    assert _row(r, "fc").synops_per_sample == 7 * 3                   # Linear: nnz x outputs


def test_known_graph_paper_convention_rates_the_spike_product(known):
    g, x, result = known
    r = analyze(g, result, "paper", x=x)
    assert _row(r, "kv").synops_per_sample == 6 * 4        # fr_k x T x FL = nnz(k) x m, not the 11 pairs
    assert _row(r, "qkv").synops_per_sample == 7 * 4
    assert _row(r, "mask").ops_per_sample == 7 + 6          # masks as in exact, in their class


def test_known_graph_spikingformer_convention(known):
    g, x, result = known
    r = analyze(g, result, "spikingformer", x=x)
    fr_q, fr_k, fr_v = 7 / 16, 6 / 16, 7 / 16
    ssa = 2 * 1 * 2 * 4 * 4 * (min(fr_k, fr_v) + fr_q)                # T h N d d (min(fr_k, fr_v) + fr_q)
    assert ssa == pytest.approx(52.0)                                # 64 x 13/16
    assert _row(r, "qkv").synops_per_sample == pytest.approx(ssa)     # on the outer product
    assert _row(r, "kv").synops_per_sample == 0                       # the inner one is in it
    assert _row(r, "fc").synops_per_sample == pytest.approx(fr_q * 2 * 24)   # fr x T x FL
    for name in ("mask", "tok", "scale", "gate"):                     # not counted by the script
        row = _row(r, name)
        assert row.synops_per_sample == row.ops_per_sample == row.macs_per_sample == 0
    # head2 is fed fc_lif spikes; "head" a Flatten of gate spikes: both AC at their rate
    s = r.summary
    assert s["energy_per_sample_j"] == pytest.approx(0.9e-12 * s["synops_per_sample"]
                                                     + 4.6e-12 * s["macs_per_sample"])
    assert "flops_counter.py" in r.convention["description"]
    assert "min(fr_k, fr_v) + fr_q" in r.to_markdown()


def test_known_graph_sdt_convention(known):
    g, x, result = known
    r = analyze(g, result, "sdt", x=x)
    assert _row(r, "kv").synops_per_sample == 6 * 4                   # R x T x FLOPs of k^T: nnz(k) x m
    assert _row(r, "qkv").synops_per_sample == 7 * 4
    mask = _row(r, "mask")
    assert (mask.synops_per_sample, mask.ops_per_sample, mask.op_class) == (7, 0, "mask")  # R_q x T x (N d)
    assert _row(r, "tok").synops_per_sample == 2                      # one SOP per event of the mask
    assert _row(r, "fc").synops_per_sample == pytest.approx(7 / 16 * 2 * 24)
    assert "SOP = R x T x FLOPs" in r.convention["description"]


def test_spikingformer_convention_refuses_a_matmul_that_is_no_spike_attention():
    g = Graph("resformer_like", timesteps=2)
    g.add(ir.Input("x", shape=(1, 2, 4)))
    g.add(ir.Neuron("s", shape=(1, 2, 4), compare=">=", threshold=0.5), ["x"])
    g.add(ir.Permute("s_t", perm=(0, 2, 1)), ["s"])
    g.add(ir.MatMul("ys", lhs="real", rhs="spike"), ["s_t", "x"])      # real (x) ... spikes
    g.add(ir.Flatten("f"), ["ys"])
    g.add(ir.Output("out", mode="potential"), ["f"])
    g = mark_operands(g.validate())
    x = np.random.default_rng(0).normal(0.5, 1, (2, 2, 1, 2, 4))
    result = reference.run(g, x, record=True)
    exact = analyze(g, result, "exact", x=x)
    assert _row(exact, "ys").synops_per_sample > 0
    with pytest.raises(SnnCompileError, match=r"node 'ys' \(MatMul of binary x real\): the spikingformer "
                                              r"convention charges only spike self-attention"):
        analyze(g, result, "spikingformer", x=x)


def test_a_kind_without_an_energy_entry_fails_by_name(monkeypatch, known):
    from snncompile.ir.stages import energy as stage

    g, x, result = known
    monkeypatch.delitem(stage.TABLE.entries, ir.Mul)
    with pytest.raises(SnnCompileError, match=r"node 'mask' \(Mul\): the energy counts has no entry"):
        analyze(g, result, x=x)


@pytest.mark.parametrize("convention", ["spikingformer", "sdt"])
def test_cli_convention_option_states_it_in_the_report(tmp_path, convention):
    import json

    from click.testing import CliRunner

    from snncompile.cli import main
    from snncompile.ir.onnx_format import save_onnx

    rng = np.random.default_rng(0)
    g = Graph("tiny", timesteps=3)
    g.add(ir.Input("x", shape=(2, 6, 6)))
    g.add(ir.Conv2d("conv", weight=rng.normal(0.3, 0.5, (4, 2, 3, 3)), bias=None, padding=(1, 1)), ["x"])
    g.add(ir.Neuron("lif", shape=(4, 6, 6), compare=">="), ["conv"])
    g.add(ir.SumPool2d("pool", kernel_size=(2, 2), stride=(2, 2)), ["lif"])
    g.add(ir.Flatten("flat"), ["pool"])
    g.add(ir.Linear("head", weight=rng.normal(0, 0.5, (3, 36)), bias=None), ["flat"])
    g.add(ir.Output("out", mode="potential"), ["head"])
    g.validate()
    save_onnx(g, tmp_path / "tiny.onnx")
    x = rng.normal(0.5, 1, (4, 3, 2, 6, 6))
    np.savez(tmp_path / "data.npz", x=x)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["energy", str(tmp_path / "tiny.onnx"), "--input",
                                    str(tmp_path / "data.npz"), "--convention", convention, "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    api = analyze(g, reference.run(g, x, record=True), convention, x=x)
    assert report["convention"]["name"] == convention
    assert report["convention"]["description"] == api.convention["description"]
    assert report["summary"]["synops_per_sample"] == pytest.approx(api.summary["synops_per_sample"])
    rows = {la["name"]: la for la in report["layers"]}
    assert rows["conv"]["macs_per_sample"] == 3 * 4 * 36 * 18           # T x FL, padding taps included
    assert 0.05 < rows["lif"]["firing_rate"] < 0.9
    # the Spikingformer script counts only conv/linear layers: the SumPool is not counted
    pool_synops = rows["pool"]["synops_per_sample"]
    assert (pool_synops == 0) if convention == "spikingformer" else (pool_synops > 0)


def test_spikingformer_convention_leaves_out_one_to_one_scales():
    """A depthwise 1x1 conv is a BatchNorm or input gain the frontend could not fold: the
    script counts no BatchNorm, so neither does the convention; exact counts its MACs."""
    rng = np.random.default_rng(0)
    g = Graph("gain", timesteps=2)
    g.add(ir.Input("x", shape=(3, 4, 4)))
    g.add(ir.Conv2d("gain", weight=rng.uniform(0.5, 1.5, (3, 1, 1, 1)), bias=np.zeros(3), groups=3), ["x"])
    g.add(ir.Neuron("lif", shape=(3, 4, 4), compare=">=", threshold=0.5), ["gain"])
    g.add(ir.Conv2d("conv", weight=rng.normal(0, 1, (2, 3, 1, 1)), bias=None), ["lif"])
    g.add(ir.Output("out", mode="potential"), ["conv"])
    g.validate()
    x = rng.random((2, 3, 4, 4))
    result = reference.run(g, x, record=True)
    exact, sf = analyze(g, result, x=x), analyze(g, result, "spikingformer", x=x)
    assert _row(exact, "gain").macs_per_sample == 2 * 48 and _row(sf, "gain").macs_per_sample == 0
    rate = _row(exact, "lif").firing_rate
    assert 0.05 < rate < 0.95
    assert _row(sf, "conv").synops_per_sample == pytest.approx(rate * 2 * 2 * 3 * 16)   # fr x T x FL


# -- the zoo (tests/transformer_zoo.py) exported by the frontend ---------------------------
ZOO = ["spikformer_cifar", "spikformer_imagenet", "spikingformer", "sdt_v1", "sdt_v2", "qkformer",
       "spikingresformer"]
#: QKFormer's stage-3 proj_lif runs on (T*B, ...) in eager mode, mixing the samples of a batch
#: (the frontend warns); the graph is eager at batch size 1, so SynOpCounter runs per sample
PER_SAMPLE = {"qkformer"}


@pytest.fixture(scope="module")
def zoo():
    """name -> (ZooTransformer, float64 model, graph, x = inputs(2, seed=0), reference run)."""
    import sys
    import warnings
    from pathlib import Path

    from snncompile.frontend import from_torch

    sys.path.insert(0, str(Path(__file__).parent))
    from stubs import timm_helpers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny models: a second thread only slows a loaded machine
    with timm_helpers.installed():
        import transformer_zoo
    cache = {}

    def get(name):
        if name not in cache:
            zm = transformer_zoo.MODELS[name]
            model = zm.build().double()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = from_torch(model, zm.input_shape, zm.timesteps, name=name)
            x = zm.inputs(2, seed=0)
            cache[name] = (zm, model, graph, x, reference.run(graph, x, record=True))
        return cache[name]
    yield transformer_zoo, get
    torch.set_num_threads(threads)


def _zoo_synopcounter(tzoo, model, x, per_sample: bool) -> tuple[int, int]:
    """SynOpCounter's (total, aten.bmm part) on the official forward, as test_transformer_zoo."""
    totals = [0, 0]
    for part in ([x[i:i + 1] for i in range(len(x))] if per_sample else [x]):
        counter = SynOpCounter()
        tzoo.sj_functional.reset_net(model)
        with torch.no_grad(), DispatchCounterMode([counter]):
            model(torch.from_numpy(part).double())
        totals[0] += counter.get_total()
        totals[1] += counter.records["Global"].get(torch.ops.aten.bmm.default, 0)
    tzoo.sj_functional.reset_net(model)
    return totals[0], totals[1]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_exact_synops_equal_synopcounter(zoo, name):
    from test_transformer_zoo import SYNOPS_REFERENCE

    tzoo, get = zoo
    zm, model, graph, x, result = get(name)
    report = analyze(graph, result, x=x)
    rates = [la.firing_rate for la in report.layers if la.role == "neuron"]
    assert 0.02 <= np.mean(rates) <= 0.40 and min(rates) > 0
    if name in PER_SAMPLE:
        total, bmm = _zoo_synopcounter(tzoo, model, x, per_sample=True)
    else:
        total, bmm = SYNOPS_REFERENCE[name]
    s = report.summary
    assert s["spike_synops_per_sample"] * len(x) == pytest.approx(total, rel=1e-9)
    matmuls = sum(la.synops_per_sample for la in report.layers if la.kind == "MatMul")
    assert matmuls * len(x) == pytest.approx(bmm, rel=1e-9)          # the attention products alone
    by_class = s["ops_per_sample_by_class"]
    if name == "sdt_v1":                                              # SDSA: k*v, token sum, q*kv
        assert by_class["mask"] > 0 and by_class["reduce"] > 0
    if name in ("spikformer_cifar", "spikformer_imagenet", "qkformer"):   # spike adds feed layers
        assert s["count_synops_per_sample"] > 0


def _spikingformer_script(tzoo, model, x, heads: int) -> tuple[dict, dict, float]:
    """The Spikingformer script's figures by forward hooks on the torch model (ops.py hooks:
    AC = FL x rate of an exactly binary input, else FL MACs, for the modules named conv/head;
    flops_counter.py: T*h*N*d*d*(min(fr_k, fr_v) + fr_q) per block), per sample, bias ops left
    out (the graph folds BatchNorms into biases). The head runs per step (``forward_steps``)."""
    import torch.nn as nn

    acs, macs, rates, hooks = {}, {}, {}, []

    def hook(name):
        def fn(mod, inp, out):
            i = inp[0]
            if isinstance(mod, nn.Linear):
                fl = i.numel() * mod.out_features
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                fl = out.numel() * int(np.prod(mod.kernel_size)) * mod.in_channels // mod.groups
            else:
                rates[name] = (float(out.sum() / out.numel()), tuple(out.shape))
                return
            if bool(((i == 0) | (i == 1)).all()):
                acs[name] = acs.get(name, 0) + fl * float(i.sum() / i.numel())
            else:
                macs[name] = macs.get(name, 0) + fl
        return fn
    for name, mod in model.named_modules():
        counted = ("conv" in name or "head" in name) and isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d))
        if counted or name.endswith(("attn.q_lif", "attn.k_lif", "attn.v_lif")):
            hooks.append(mod.register_forward_hook(hook(name)))
    tzoo.sj_functional.reset_net(model)
    try:
        with torch.no_grad():
            model.forward_steps(torch.from_numpy(x).double())
    finally:
        for h in hooks:
            h.remove()
        tzoo.sj_functional.reset_net(model)
    ssa = 0.0
    for name in [n for n in rates if n.endswith("q_lif")]:
        block = name[:-len("q_lif")]
        (fr_q, (T, _, C, N)), fr_k, fr_v = rates[name], rates[block + "k_lif"][0], rates[block + "v_lif"][0]
        d = C // heads                                                # q_lif output: (T, B, C, N)
        ssa += T * heads * N * d * d * (min(fr_k, fr_v) + fr_q)
    B = len(x)
    return {k: v / B for k, v in acs.items()}, {k: v / B for k, v in macs.items()}, ssa  # ssa: rates


@pytest.mark.parametrize("name", ["spikingformer", "spikformer_imagenet"])
def test_zoo_spikingformer_convention_equals_the_script(zoo, name):
    tzoo, get = zoo
    zm, model, graph, x, result = get(name)
    acs, macs, ssa = _spikingformer_script(tzoo, model, x, zm.kwargs["num_heads"])
    report = analyze(graph, result, "spikingformer", x=x)
    rows = {la.name: la for la in report.layers}
    for layer, ac in acs.items():
        assert rows[layer].synops_per_sample == pytest.approx(ac, rel=1e-9), layer
    for layer, mac in macs.items():
        assert rows[layer].macs_per_sample == pytest.approx(mac, rel=1e-9), layer
    assert ssa > 0
    matmuls = sum(la.synops_per_sample for la in report.layers if la.kind == "MatMul")
    assert matmuls == pytest.approx(ssa, rel=1e-9)
    s = report.summary
    assert s["synops_per_sample"] == pytest.approx(sum(acs.values()) + ssa, rel=1e-9)
    assert s["macs_per_sample"] == pytest.approx(sum(macs.values()), rel=1e-9)
    assert s["energy_per_sample_j"] == pytest.approx(
        (4.6 * s["macs_per_sample"] + 0.9 * s["synops_per_sample"]) * 1e-12, rel=1e-9)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_every_convention_reports(zoo, name):
    """sdt and paper report every family; spikingformer every family whose products are spike
    self-attentions, and names the first MatMul of SpikingResformer's real x spike DSSA."""
    _, get = zoo
    _, _, graph, x, result = get(name)
    for convention in ("paper", "sdt"):
        r = analyze(graph, result, convention, x=x)
        assert r.summary["synops_per_sample"] > 0 and r.convention["name"] == convention
    if name == "spikingresformer":
        with pytest.raises(SnnCompileError, match=r"MatMul of real x binary\): the spikingformer convention"):
            analyze(graph, result, "spikingformer", x=x)
    elif name != "sdt_v1":
        r = analyze(graph, result, "spikingformer", x=x)
        assert sum(la.synops_per_sample for la in r.layers if la.kind == "MatMul") > 0


def test_cli_streams_an_attention_graph_in_chunks_to_the_same_report(tmp_path, attention):
    """``snncompile energy`` on the attention block read back from ONNX: one chunk per sample
    (EnergyJob -> CountRecord int64 sums, merged) gives the report of the whole run at once."""
    import json

    from click.testing import CliRunner

    from snncompile.cli import main
    from snncompile.ir.onnx_format import save_onnx

    g, x, result, report = attention
    save_onnx(g, tmp_path / "attention.onnx")
    np.savez(tmp_path / "data.npz", x=x)
    summaries = []
    for chunk in ("1", "3"):
        out = tmp_path / f"r{chunk}.json"
        res = CliRunner().invoke(main, ["energy", str(tmp_path / "attention.onnx"), "--input",
                                        str(tmp_path / "data.npz"), "--chunk-size", chunk, "-o", str(out)])
        assert res.exit_code == 0, res.output
        summaries.append(json.loads(out.read_text())["summary"])
    for key in ("synops_per_sample", "spike_synops_per_sample", "count_synops_per_sample",
                "ops_per_sample_by_class", "energy_per_sample_j", "spikes_per_sample"):
        assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-12), key
        assert summaries[0][key] == pytest.approx(report.summary[key], rel=1e-12), key


def test_zoo_fixed_point_emulator_counts_in_spike_units(zoo):
    """An emulator fixed run records spikes and spike sums as integers in spike units, so its
    report counts the same classes on the same scale: a sum's recorded total equals its input's
    (a ReduceSum only regroups events), and a MatMul of two spike trains records whole
    coincidence counts."""
    from snncompile.quantize import quantize
    from snncompile.targets import run

    zm, model, graph, x, result = zoo[1]("spikformer_imagenet")
    qgraph, _ = quantize(graph, calib=zm.inputs(8, seed=3))
    fixed = run(qgraph, x, backend="emulator", precision="fixed", record=True)
    report, float_report = analyze(qgraph, fixed, x=x), analyze(graph, result, x=x)
    assert report.summary["precision"] == "fixed"
    rates = [la.firing_rate for la in report.layers if la.role == "neuron"]
    assert 0.02 <= np.mean(rates) <= 0.40 and min(rates) > 0
    rows = {la.name: la for la in report.layers}
    sums = [la for la in report.layers if la.kind == "ReduceSum" and la.input_kind != "real"]
    assert sums
    for la in sums:
        assert fixed.layer_counts[la.name].sum() == fixed.layer_counts[la.source].sum(), la.name
    products = [la for la in report.layers if la.kind == "MatMul" and la.input_kind == "binary x binary"]
    assert len(products) == 2
    for la in products:
        assert la.synops_per_sample * len(x) == fixed.layer_counts[la.name].sum() > 0
    for key in ("spike_synops_per_sample", "count_synops_per_sample"):
        assert report.summary[key] > 0 and float_report.summary[key] > 0
    assert set(rows) == {la.name for la in float_report.layers}
