"""ONNX round trips of the spiking-transformer kinds (issue 11): a tiny attention block with every
kind, the full checker with every tensor's shape inferred, hostile edits refused by node name,
random layouts (hypothesis), `inspect` of the new kinds and the chip mapper on them."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from snncompile.cli import main
from snncompile.errors import SnnCompileError
from snncompile.ir import Conv2d, Graph, Input, Neuron, Output, graph_differences
from snncompile.ir import nodes as ir
from snncompile.ir.onnx_format import from_model, load_onnx, save_onnx, stamp_digest, to_model
from snncompile.passes.operands import mark_operands
from snncompile.targets import run

RNG = np.random.default_rng(11)
T = 4


def _attention_graph() -> Graph:
    """Input -> Conv 1x1 -> LIF -> heads (Reshape, Slice q/k/v, Permute) -> q @ k^T -> * 0.125 -> LIF
    -> attn @ v, plus SDT's mask branch (k * v -> token sum -> q * kv) -> Add -> Scale (BN) -> LIF
    -> heads back (Permute, Reshape) -> Output."""
    g = Graph("tiny_attention", timesteps=T)
    g.add(Input("in", shape=(2, 4, 4)))
    g.add(Conv2d("qkv_conv", weight=RNG.normal(0.5, 0.6, size=(24, 2, 1, 1)), bias=np.full(24, 0.1)), ["in"])
    g.add(Neuron("qkv_lif", shape=(24, 4, 4), dv=0.5), ["qkv_conv"])
    g.add(ir.Reshape("heads", shape=(3, 2, 4, 16)), ["qkv_lif"])          # (qkv, h, d, N)
    for i, part in enumerate("qkv"):
        g.add(ir.Slice(f"{part}_cut", axis=0 if part != "v" else -4, start=i, stop=i + 1), ["heads"])
        g.add(ir.Reshape(f"{part}_hdn", shape=(2, 4, 16)), [f"{part}_cut"])
        g.add(ir.Permute(f"{part}_hnd", perm=(0, 2, 1)), [f"{part}_hdn"])  # (h, N, d)
    g.add(ir.MatMul("q_kT", ), ["q_hnd", "k_hdn"])                         # (h, N, N): spike x spike
    g.add(ir.Scale("attn_scale", weight=np.float64(0.125)), ["q_kT"])
    g.add(Neuron("attn_lif", shape=(2, 16, 16), threshold=0.5, dv=0.5), ["attn_scale"])
    g.add(ir.MatMul("attn_v"), ["attn_lif", "v_hnd"])                      # (h, N, d)
    g.add(ir.Mul("k_and_v"), ["k_hnd", "v_hnd"])                           # AND
    g.add(ir.ReduceSum("kv_sum", axis=-2, keepdim=True), ["k_and_v"])      # (h, 1, d): counts
    g.add(ir.Mul("q_mask"), ["q_hnd", "kv_sum"])                           # spike x count, broadcast
    g.add(ir.Add("join"), ["attn_v", "q_mask"])
    g.add(ir.Scale("proj_bn", weight=RNG.uniform(0.2, 0.6, size=(1, 4)), bias=RNG.normal(0, 0.1, size=(16, 4))),
          ["join"])
    g.add(Neuron("proj_lif", shape=(2, 16, 4)), ["proj_bn"])
    g.add(ir.Permute("tokens", perm=(1, 0, 2)), ["proj_lif"])              # (N, h, d)
    g.add(ir.Reshape("merge", shape=(16, 8)), ["tokens"])
    g.add(ir.ReduceSum("per_token", axis=1), ["merge"])
    g.add(Output("out", mode="potential"), ["per_token"])
    return mark_operands(g)


def _inputs(n=3) -> np.ndarray:
    return RNG.uniform(0, 2, size=(n, T, 2, 4, 4))


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def test_attention_block_round_trips_bit_identical_and_runs_the_same(tmp_path):
    g = _attention_graph()
    path = save_onnx(g, tmp_path / "attn.onnx")
    back = load_onnx(path)
    assert graph_differences(back, g) == []
    assert (back.node("q_kT").lhs, back.node("q_kT").rhs) == ("spike", "spike")
    assert (back.node("q_mask").lhs, back.node("q_mask").rhs) == ("spike", "count")
    assert back.node("kv_sum").axis == -2 and back.node("v_cut").axis == -4
    assert back.node("proj_bn").bias.shape == (16, 4) and back.node("attn_scale").bias is None
    x = _inputs()
    want, got = run(g, x, record=True), run(back, x, record=True)
    np.testing.assert_array_equal(got.outputs, want.outputs)
    for lif in ("qkv_lif", "attn_lif", "proj_lif"):  # every neuron layer fires, none saturates
        rate = want.layer_counts[lif].mean() / T
        assert 0.02 < rate < 0.7, (lif, rate)
        np.testing.assert_array_equal(got.layer_counts[lif], want.layer_counts[lif])


def test_full_checker_and_every_tensor_shape_inferred(tmp_path):
    g = _attention_graph()
    model = to_model(g)
    onnx.checker.check_model(model, full_check=True)
    ops = {(n.domain, n.op_type) for n in model.graph.node if n.op_type not in ("Conv", "Neuron", "Output", "Sum")}
    assert ops == {("", "Reshape"), ("", "Slice"), ("", "Transpose"), ("", "MatMul"), ("", "Mul"),
                   ("", "ReduceSum"), ("ai.snncompile", "Scale")}
    assert list(_node(model, "q_hnd").attribute[0].ints) == [0, 1, 3, 2]  # the batch axis stays first
    # shape inference alone (the value_info the writer adds removed) finds every tensor's shape
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    g.infer_shapes()
    for node in g:
        if not isinstance(node, ir.Input):
            assert shapes[node.name] == ["N", *g.shape(node.name)], node.name


def test_the_digest_covers_the_operand_kinds():
    model = to_model(_attention_graph())
    prop = next(p for p in model.metadata_props if p.key == "snncompile.operands:q_kT")
    assert json.loads(prop.value) == {"lhs": "spike", "rhs": "spike"}
    prop.value = json.dumps({"lhs": "real", "rhs": "spike"})
    with pytest.raises(SnnCompileError, match="'attn.onnx' is corrupted: its content does not match"):
        from_model(model, "attn.onnx")
    prop.value = json.dumps({"lhs": "spike", "rhs": "spike"})
    scale = next(t for t in model.graph.initializer if t.name == "proj_bn::weight")
    scale.raw_data = scale.raw_data[:-1] + bytes([scale.raw_data[-1] ^ 1])  # one bit of a Scale weight
    with pytest.raises(SnnCompileError, match="'attn.onnx' is corrupted: its content does not match"):
        from_model(model, "attn.onnx")
    prop.value = json.dumps({"lhs": "real", "rhs": "spike"})
    stamp_digest(model)  # re-signed: the graph itself says what the operands hold
    with pytest.raises(SnnCompileError, match=r"'attn.onnx': node 'q_kT' \(MatMul\): records operands "
                                              r"\(real, spike\) but its inputs hold \(spike, spike\)"):
        from_model(model, "attn.onnx")


def _set_ints(model, name, values):
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(np.array(values, dtype=np.int64), name))


def _set_perm(model, node, perm):
    n = _node(model, node)
    del n.attribute[:]
    n.attribute.append(helper.make_attribute("perm", perm))


def _set_meta(model, key, value):
    props = {p.key: p.value for p in model.metadata_props}
    if value is None:
        props.pop(key)
    else:
        props[key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, props)


def _set_inputs(model, node, inputs):
    n = _node(model, node)
    del n.input[:]
    n.input.extend(inputs)


HOSTILE = {
    "repeated perm": (lambda m: _set_perm(m, "q_hnd", [0, 1, 1, 3]),
                      r"node 'q_hnd' \(Transpose\): perm \[0, 1, 1, 3\] is not a permutation of the axes 0..3"),
    "perm moves the batch": (lambda m: _set_perm(m, "q_hnd", [1, 0, 2, 3]),
                             r"node 'q_hnd' \(Transpose\): perm \[1, 0, 2, 3\] moves the batch axis 0"),
    "no perm": (lambda m: _node(m, "q_hnd").ClearField("attribute"),
                r"node 'q_hnd' \(Transpose\): has no perm \(ONNX's default reverses every axis"),
    "perm of the wrong rank": (lambda m: _set_perm(m, "q_hnd", [0, 2, 1]),
                               r"node 'q_hnd' \(Permute\): perm \(1, 0\) is not a permutation of the 3 axes"),
    "slice past the end": (lambda m: _set_ints(m, "q_cut::ends", [7]),
                           r"node 'q_cut' \(Slice\): slice 0:7 does not fit axis 0 of size 3"),
    "empty slice": (lambda m: _set_ints(m, "k_cut::starts", [1]) or _set_ints(m, "k_cut::ends", [1]),
                    r"node 'k_cut' \(Slice\): slice 1:1 does not fit axis 0 of size 3"),
    "slice of the batch": (lambda m: _set_ints(m, "q_cut::axes", [0]),
                           r"node 'q_cut' \(Slice\): axes \[0\] is the batch axis"),
    "reshape count": (lambda m: _set_ints(m, "heads::shape", [0, 3, 2, 4, 15]),
                      r"node 'heads' \(Reshape\): cannot reshape \(24, 4, 4\) \(384 values\) to \(3, 2, 4, 15\)"),
    "reshape of the batch": (lambda m: _set_ints(m, "heads::shape", [-1, 3, 2, 4, 16]),
                             r"node 'heads' \(Reshape\): shape \[-1, 3, 2, 4, 16\] must be 0 \(copy the batch"),
    "sum axis out of range": (lambda m: _set_ints(m, "kv_sum::axes", [4]),
                              r"node 'kv_sum' \(ReduceSum\): axis 3 is out of range for a rank-3 input"),
    "matmul shapes": (lambda m: _set_inputs(m, "q_kT", ["q_hnd", "k_hnd"]),
                      r"node 'q_kT' \(MatMul\): cannot multiply per-sample shapes \(2, 16, 4\) @ \(2, 16, 4\)"),
    "mul shapes": (lambda m: _set_inputs(m, "q_mask", ["q_hnd", "q_kT"]),
                   r"node 'q_mask' \(Mul\): cannot broadcast per-sample shapes \(2, 16, 4\) and \(2, 16, 16\)"),
    "no operand kinds": (lambda m: _set_meta(m, "snncompile.operands:attn_v", None),
                         r"node 'attn_v' \(MatMul\): has no 'snncompile.operands:attn_v' metadata"),
    "unknown operand kind": (lambda m: _set_meta(m, "snncompile.operands:attn_v", '{"lhs": "bits", "rhs": "spike"}'),
                             r"node 'attn_v' \(MatMul\): lhs must be one of \('spike', 'count', 'real'\), got 'bits'"),
    "operand kinds of a non-product": (lambda m: _set_meta(m, "snncompile.operands:join", '{"lhs": "spike"}'),
                                       r"operand metadata 'snncompile.operands:join' names no MatMul or Mul"),
    "mask operands disagree": (lambda m: _set_meta(m, "snncompile.operands:q_mask",
                                                   '{"lhs": "spike", "rhs": "spike"}'),
                               r"node 'q_mask' \(Mul\): records operands \(spike, spike\) but its inputs hold "
                               r"\(spike, count\)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_edits_are_refused_by_node_name(tmp_path, case):
    edit, reason = HOSTILE[case]
    model = to_model(_attention_graph())
    edit(model)
    path = tmp_path / "edited.onnx"
    onnx.save(stamp_digest(model), str(path))
    with pytest.raises(SnnCompileError, match=reason) as info:
        load_onnx(path)
    assert str(info.value).startswith(f"'{path}': ")


def test_writing_refuses_products_whose_operands_were_never_marked(tmp_path):
    g = _attention_graph()
    g.node("attn_v").lhs = "real"  # as a hand-built graph that skipped passes.mark_operands
    with pytest.raises(SnnCompileError, match=r"node 'attn_v' \(MatMul\): records operands \(real, spike\) "
                                              r"but its inputs hold \(spike, spike\)"):
        save_onnx(g, tmp_path / "g.onnx")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- random layouts
@st.composite
def _layout_chain(draw):
    """A random per-sample shape, then a Permute, a Slice and a ReduceSum with random axes (negative too)."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4)))
    rank = len(shape)
    perm = tuple(draw(st.permutations(range(rank))))
    permuted = tuple(shape[p] for p in perm)
    axis = draw(st.integers(-rank, rank - 1))
    size = permuted[axis]
    start = draw(st.integers(0, size - 1))
    stop = draw(st.integers(start + 1, size))
    sum_axis = draw(st.integers(-rank, rank - 1))
    keepdim = draw(st.booleans())
    return shape, perm, (axis, start, stop), (sum_axis, keepdim), draw(st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_layout_chain())
def test_random_layouts_round_trip_and_pass_the_checker(chain):
    shape, perm, (axis, start, stop), (sum_axis, keepdim), bias = chain
    g = Graph("layouts", timesteps=2)
    g.add(Input("in", shape=shape))
    g.add(Neuron("lif", shape=shape, threshold=0.3), ["in"])
    g.add(ir.Permute("perm", perm=perm), ["lif"])
    g.add(ir.Slice("cut", axis=axis, start=start, stop=stop), ["perm"])
    cut_shape = g.infer_shapes().shape("cut")
    g.add(ir.Scale("scale", weight=np.linspace(0.5, 1.5, cut_shape[-1]),
                   bias=np.full(cut_shape, 0.25) if bias else None), ["cut"])
    g.add(ir.Mul("gate"), ["cut", "scale"])
    if keepdim or len(cut_shape) > 1:
        g.add(ir.ReduceSum("sum", axis=sum_axis, keepdim=keepdim), ["gate"])
        g.add(ir.Reshape("flat", shape=(int(np.prod(g.infer_shapes().shape("sum"))),)), ["sum"])
    else:
        g.add(ir.Reshape("flat", shape=cut_shape), ["gate"])
    g.add(Output("out", mode="potential"), ["flat"])
    mark_operands(g)
    model = to_model(g)
    onnx.checker.check_model(model, full_check=True)
    back = from_model(model)
    assert graph_differences(back, g) == []
    x = np.random.default_rng(len(shape)).uniform(0, 1, size=(2, 2, *shape))
    want = run(g, x)
    np.testing.assert_array_equal(run(back, x).outputs, want.outputs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 4))
def test_random_head_products_round_trip(lead, n, k, m):
    """(..., n, k) @ (..., k, m) of spikes over random head axes, from one spike population."""
    lead = tuple(lead)
    size = int(np.prod(lead, dtype=int)) * (n * k + k * m)
    g = Graph("heads", timesteps=2)
    g.add(Input("in", shape=(size,)))
    g.add(Neuron("lif", shape=(size,), threshold=0.5), ["in"])
    cut = int(np.prod(lead, dtype=int)) * n * k
    g.add(ir.Slice("a_flat", axis=0, start=0, stop=cut), ["lif"])
    g.add(ir.Slice("b_flat", axis=-1, start=cut, stop=size), ["lif"])
    g.add(ir.Reshape("a", shape=lead + (n, k)), ["a_flat"])
    g.add(ir.Reshape("b", shape=lead + (k, m)), ["b_flat"])
    g.add(ir.MatMul("ab"), ["a", "b"])
    g.add(ir.Reshape("flat", shape=(int(np.prod(lead, dtype=int)) * n * m,)), ["ab"])
    g.add(Output("out", mode="potential"), ["flat"])
    mark_operands(g)
    back = from_model(to_model(g))
    assert graph_differences(back, g) == [] and (back.node("ab").lhs, back.node("ab").rhs) == ("spike", "spike")
    x = np.random.default_rng(size).uniform(0, 1, size=(2, 2, size))
    np.testing.assert_array_equal(run(back, x).outputs, run(g, x).outputs)


# ----------------------------------------------------------------------------- inspect and map
@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


def test_inspect_shows_the_new_kinds_with_shapes_and_operands(tmp_path, cli):
    path = save_onnx(_attention_graph(), tmp_path / "attn.onnx")
    res = cli("inspect", path)
    assert res.exit_code == 0, res.output
    row = {line.split()[0]: line for line in res.stdout.splitlines()[3:] if line.strip()}
    assert "MatMul     q_hnd, k_hdn" in row["q_kT"] and row["q_kT"].endswith("spike x spike (h=2, 16x4 @ 4x16)")
    assert row["attn_v"].endswith("spike x spike (h=2, 16x16 @ 16x4)")
    assert row["k_and_v"].endswith("spike x spike, AND (2x16x4 * 2x16x4)")
    assert row["q_mask"].endswith("spike x count (2x16x4 * 2x1x4)")
    assert row["kv_sum"].split()[1:4] == ["ReduceSum", "k_and_v", "2x1x4"]
    assert row["kv_sum"].endswith("sum over axis -2, keepdim")
    assert row["heads"].endswith("reshape 24x4x4 -> 3x2x4x16")
    assert row["q_hnd"].endswith("perm (0, 2, 1)") and row["v_cut"].endswith("axis -4 [2:3] of 3")
    assert row["attn_scale"].endswith("x 0.125")
    assert "+ " in row["proj_bn"] and "(16, 4)" in row["proj_bn"]
    assert res.stdout.splitlines()[-1] == f"totals: 27 nodes, {24 * 2 + 24 + 1 + 4 + 64} weights, " \
                                          f"{384 + 512 + 128} neurons"
    info = json.loads(cli("inspect", path, "--json").stdout)
    nodes = {n["name"]: n for n in info["nodes"]}
    assert nodes["q_mask"]["params"] == {"lhs": "spike", "rhs": "count"}
    assert nodes["v_cut"]["params"] == {"axis": -4, "start": 2, "stop": 3}
    assert nodes["attn_scale"]["params"] == {"weight": 0.125, "bias": None}
    assert nodes["merge"]["shape"] == [16, 8] and nodes["merge"]["params"] == {"shape": [16, 8]}


@pytest.mark.parametrize("graph", ["attention", "layout_only"])
def test_chip_mapper_maps_the_new_kinds(tmp_path, cli, graph):
    """Issue 15: the transformer kinds have core layouts (tests/test_chip_transformer.py counts them);
    from the ONNX file, every unit lands on a core and a layout alone costs nothing."""
    g = _attention_graph()
    if graph == "layout_only":  # a layout that only re-indexes the spikes sent to the host
        g = Graph("layout_only", timesteps=T)
        g.add(Input("in", shape=(2, 4, 4)))
        g.add(Conv2d("conv", weight=np.ones((24, 2, 1, 1))), ["in"])
        g.add(Neuron("lif", shape=(24, 4, 4)), ["conv"])
        g.add(ir.Reshape("heads", shape=(3, 2, 4, 16)), ["lif"])
        g.add(Output("out"), ["heads"])
    path = save_onnx(g, tmp_path / "g.onnx")
    res = cli("map", path, "--chip", "loihi2", "-o", tmp_path / "map.json")
    assert res.exit_code == 0, res.stderr
    out = json.loads((tmp_path / "map.json").read_text())
    layers = {la["name"]: la for la in out["layers"]}
    if graph == "layout_only":
        assert list(layers) == ["lif"] and layers["lif"]["neurons"] == 384
        assert out["cores_detail"][0]["output_axons"] == 384          # one per neuron, to the host
    else:
        assert layers["q_kT:products"]["neurons"] == 2 * 16 * 4 * 16 and layers["q_kT"]["neurons"] == 2 * 16 * 16
        assert layers["k_and_v"]["role"] == "and" and layers["q_mask"]["role"] == "product"
        assert layers["kv_sum"]["role"] == "accumulator" and layers["proj_bn"]["role"] == "scale"
        assert sum(la["neurons"] for la in out["layers"]) == sum(b - a for a, b in (c["neurons"] for c in
                                                                                      out["cores_detail"]))


def test_a_graph_name_that_is_not_text_is_refused_as_corrupted(tmp_path):
    data = to_model(_attention_graph()).SerializeToString()
    at = data.index(b"tiny_attention")  # GraphProto.name, before the metadata that repeats it
    path = tmp_path / "bad_name.onnx"
    path.write_bytes(data[:at] + b"\xff" * 14 + data[at + 14:])
    with pytest.raises(SnnCompileError, match="is corrupted: it holds names or text that are not valid UTF-8"):
        load_onnx(path)


# ----------------------------------------------------------------------------- the zoo
ZOO = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer",
       "spikingresformer"]


@pytest.fixture(scope="module")
def zoo_exports(tmp_path_factory):
    """name -> (ZooTransformer, exported graph, graph read back from its ONNX file)."""
    import warnings

    import torch
    from stubs import timm_helpers

    from snncompile.frontend import MappingWarning, from_torch

    cache, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only slows a loaded 2-core machine

    def get(name):
        if name not in cache:
            with timm_helpers.installed():
                import transformer_zoo
                zm = transformer_zoo.MODELS[name]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MappingWarning)
                    graph = from_torch(zm.build().double(), zm.input_shape, zm.timesteps, name=name)
            path = save_onnx(graph, tmp_path_factory.mktemp("zoo") / f"{name}.onnx")
            cache[name] = (zm, graph, load_onnx(path), path)
        return cache[name]
    yield get
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_transformer_round_trips_bit_identical(zoo_exports, name):
    zm, graph, back, path = zoo_exports(name)
    assert graph_differences(back, graph) == []
    kinds = {n.kind for n in back}
    assert kinds & {"MatMul", "Mul"} and "Scale" in kinds and kinds & {"Reshape", "Permute"}
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    missing = [n.name for n in back if not isinstance(n, ir.Input) and shapes.get(n.name) != ["N", *back.shape(n.name)]]
    assert not missing, f"{name}: shapes not inferred as the IR's: {missing[:5]}"
    x = zm.inputs(4, seed=5)
    want, got = run(graph, x, record=True), run(back, x, record=True)
    np.testing.assert_array_equal(got.outputs, want.outputs)
    rates = [want.layer_counts[n.name].mean() / zm.timesteps for n in back if n.kind == "Neuron"]
    assert 0.02 < np.mean(rates) < 0.4, rates


@pytest.mark.parametrize("name", ZOO)
def test_zoo_transformers_inspect_and_map_or_are_refused_by_name(zoo_exports, name):
    from snncompile.chip.mapper import map_graph
    from snncompile.ir.summary import format_summary, summarize

    _, _, back, _ = zoo_exports(name)
    text = format_summary(summarize(back))
    for node in back:
        if isinstance(node, ir.PRODUCTS):
            row = next(line for line in text.splitlines() if line.startswith(node.name + " "))
            assert f"{node.kind} " in row and f"{node.lhs} x {node.rhs}" in row, row
    # issue 15: mapped, or refused by name where a MaxPool takes real values (no OR neuron computes
    # that max); tests/test_chip_transformer.py checks the maps
    pools = [n for n in back if isinstance(n, ir.MaxPool2d) and back.node(back.inputs_of(n.name)[0]).kind != "Neuron"]
    if pools:
        with pytest.raises(SnnCompileError, match=r"\(MaxPool2d\): max-pools a current"):
            map_graph(back, "loihi2")
    else:
        assert any(la.role == "products" for la in map_graph(back, "loihi2").layers)


def test_a_tensor_in_an_external_file_is_refused_and_never_read(tmp_path):
    model = to_model(_attention_graph())
    weight = next(t for t in model.graph.initializer if t.name == "proj_bn::weight")
    (tmp_path / "secret.bin").write_bytes(weight.raw_data)
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="secret.bin")
    path = tmp_path / "external.onnx"
    path.write_bytes(stamp_digest(model).SerializeToString())
    with pytest.raises(SnnCompileError, match=r"external.onnx': tensor 'proj_bn::weight' is stored in an external "
                                              r"file, which is not part of the snncompile format"):
        load_onnx(path)


#: every zoo family quantizes (tests/test_fixed_transformer.py)
QUANTIZED = ZOO


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_zoo_transformers_round_trip_with_their_scale_fixed_point(zoo_exports, name, tmp_path):
    from snncompile.ir import fixed as fx
    from snncompile.quantize import quantize
    from snncompile.targets import emulator

    zm, graph, _, _ = zoo_exports(name)
    x = zm.inputs(6, seed=5)
    qg, _ = quantize(graph, calib=x[:4])
    back = load_onnx(save_onnx(qg, tmp_path / "q.onnx"))
    assert graph_differences(back, qg) == []
    scales = [n for n in back if isinstance(n, ir.Scale)]
    assert scales and all(isinstance(n.fixed, fx.SynapseFixed) and n.fixed.weight.shape == n.weight.shape
                          and n.fixed == qg.node(n.name).fixed for n in scales)
    want = emulator.run(qg, x, precision="fixed", engine="torch", record=True)
    got = emulator.run(back, x, precision="fixed", engine="torch", record=True)
    np.testing.assert_array_equal(got.outputs, want.outputs)
    rates = [want.layer_counts[n.name].mean() / zm.timesteps for n in back if n.kind == "Neuron"]
    assert 0.01 < np.mean(rates) < 0.5, rates
    if name == "spikformer_cifar":  # a Scale whose integer weight no longer fits its node is refused
        model = onnx.load(str(tmp_path / "q.onnx"))
        first = scales[0].name
        tensor = next(t for t in model.graph.initializer if t.name == f"{first}::fixed.weight")
        tensor.CopyFrom(numpy_helper.from_array(np.zeros((2, 3, 5), dtype=np.int64), tensor.name))
        onnx.save(stamp_digest(model), str(tmp_path / "edited.onnx"))
        with pytest.raises(SnnCompileError, match=rf"node '{first}': fixed-point weight has shape \(2, 3, 5\), "
                                                  rf"the node's weight"):
            load_onnx(tmp_path / "edited.onnx")
