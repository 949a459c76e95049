"""Capture of the spiking-transformer zoo (tests/transformer_zoo.py) by running it.

Every family exports from the module and, through the CLI, from a state dict with ``--model``; the reference
target (float64) equals PyTorch eager (``model.double()``) on 20 random images: every neuron
layer has the same spike count per neuron and the same spike total per step, the readout is
within 1e-9 relative, and every layer fires at a moderate rate. Layout chains stay short, no
frontend-only node is left, and non-spiking operations are refused by module and name.
"""
import collections
import copy
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snncompile.cli import main
from snncompile.errors import SnnCompileError
from snncompile.frontend import MappingWarning, from_torch, mapping_warnings
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.ir.onnx_format import load_onnx
from snncompile.targets import run
from transformer_eager import PER_SAMPLE_EAGER, eager_run as _eager

NAMES = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer", "spikingresformer"]
N_SAMPLES = 20

#: (kind, lhs, rhs) of the products each family must capture, and other kinds it must have.
PRODUCTS = {
    "spikformer_cifar": {("MatMul", "spike", "spike"): 2, ("MatMul", "real", "spike"): 2},
    "spikformer_imagenet": {("MatMul", "spike", "spike"): 2, ("MatMul", "spike", "count"): 2},
    "spikingformer": {("MatMul", "spike", "spike"): 2, ("MatMul", "spike", "count"): 2},
    "sdt_v1": {("Mul", "spike", "spike"): 4},
    "sdt_v2": {("MatMul", "spike", "spike"): 2, ("MatMul", "spike", "count"): 2},
    "qkformer": {("Mul", "spike", "spike"): 2, ("MatMul", "spike", "spike"): 1, ("MatMul", "spike", "count"): 1},
    "spikingresformer": {("MatMul", "real", "spike"): 4},
}
KINDS = {
    "spikformer_cifar": {"ReduceSum", "Scale", "Permute", "Reshape", "MaxPool2d"},
    "spikformer_imagenet": {"ReduceSum", "Scale", "Permute", "Reshape"},
    "spikingformer": {"ReduceSum", "Scale", "Permute", "Reshape"},
    "sdt_v1": {"ReduceSum", "Scale", "Permute", "Reshape"},
    "sdt_v2": {"ReduceSum", "Scale", "Permute", "Reshape"},
    "qkformer": {"ReduceSum", "Scale", "Permute", "Reshape"},
    "spikingresformer": {"Slice", "Scale", "Permute", "Reshape", "AvgPool2d"},
}


@pytest.fixture(scope="module")
def exported(tzoo):
    """name -> (ZooTransformer, float64 model, graph exported from the module)."""
    cache = {}

    def get(name):
        if name not in cache:
            zm = tzoo.MODELS[name]
            model = zm.build().double()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MappingWarning)
                graph = from_torch(model, zm.input_shape, zm.timesteps, name=name)
            cache[name] = (zm, model, graph)
        return cache[name]
    return get


@pytest.mark.parametrize("name", NAMES)
def test_reference_equals_pytorch_eager(tzoo, exported, name):
    zm, model, graph = exported(name)
    x = zm.inputs(N_SAMPLES, seed=5)
    expected, counts, steps = _eager(tzoo, zm, model, x, name in PER_SAMPLE_EAGER)
    got = run(graph, x, record=True)
    assert graph.output.mode == "potential"
    assert got.outputs.shape == expected.shape == (N_SAMPLES, zm.timesteps, 10)
    assert np.abs(got.outputs - expected).max() <= 1e-9 * np.abs(expected).max()
    assert np.ptp(expected, axis=0).max() > 1e-3, "outputs do not depend on the input"
    neurons = [n.name for n in graph if isinstance(n, ir.Neuron)]
    assert set(neurons) == set(counts), "every neuron module that runs is one Neuron node"
    for node in neurons:
        assert got.layer_counts[node].shape == counts[node].shape, node
        mismatches = int(np.sum(got.layer_counts[node] != counts[node]))
        assert mismatches == 0 and np.array_equal(got.layer_steps[node], steps[node]), \
            f"{name}: {node}: {mismatches} spike-count mismatches"
        rate = counts[node].mean() / zm.timesteps
        assert 0.02 <= rate <= 0.40, f"{name}: {node} fires at {rate:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_graph_shapes_kinds_and_products(exported, name):
    _, _, graph = exported(name)
    graph.validate()
    for src, dst, data in graph.nx.edges(data=True):
        assert tuple(data["shape"]) == tuple(graph.shape(src)), f"edge {src} -> {dst}"
    count = collections.Counter(n.kind for n in graph)
    assert set(count) <= set(ir.NODE_TYPES), "a frontend-only node (Affine) is left"
    assert KINDS[name] <= set(count)
    products = collections.Counter((n.kind, n.lhs, n.rhs) for n in graph if isinstance(n, ir.PRODUCTS))
    assert products == PRODUCTS[name]
    for node in graph:
        if isinstance(node, ir.Linear):  # Linear on tokens is lowered to a 1x1 Conv2d
            assert len(graph.shape(graph.inputs_of(node.name)[0])) == 1, node.name
        if isinstance(node, ir.Permute):  # identities and chains are gone
            assert node.perm != tuple(range(len(node.perm))), node.name
            assert not isinstance(graph.node(graph.inputs_of(node.name)[0]), ir.Permute), node.name


def test_token_linear_and_batchnorm1d_fold_into_one_conv(exported):
    """Spikformer CIFAR's q_linear + BN1d on transposed tokens (and q_lif's input gain) is one
    1x1 Conv2d on (C, N, 1)."""
    _, model, graph = exported("spikformer_cifar")
    conv = graph.node("block.0.attn.q_linear")
    assert isinstance(conv, ir.Conv2d) and conv.weight.shape == (32, 32, 1, 1)
    assert graph.shape(graph.inputs_of(conv.name)[0]) == (32, 16, 1)
    bn = model.block[0].attn.q_bn
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    w = model.block[0].attn.q_linear.weight.detach().numpy()
    input_gain = 1.0 / model.block[0].attn.q_lif.tau  # decay_input: the LIF takes x / tau
    np.testing.assert_allclose(conv.weight[:, :, 0, 0], w * gain[:, None] * input_gain, rtol=1e-12)


def test_the_batch_mixing_neuron_is_named_in_a_warning(tzoo):
    zm = tzoo.MODELS["qkformer"]
    with pytest.warns(MappingWarning, match=r"module 'stage3.0.ssa.proj_lif' .* multi-step neuron run on "
                                            r"\(T\*B, ...\).*batch size 1"):
        from_torch(zm.build().double(), zm.input_shape, zm.timesteps)


def test_sdt_v2_repconv_padding_is_the_conv_of_a_zero_padded_input(exported):
    """BNAndPadLayer's border (the value BN gives 0) is the padded 1x1 conv with the BN folded."""
    _, _, graph = exported("sdt_v2")
    conv = graph.node("block3.0.attn.q_conv.0.body.0")
    assert isinstance(conv, ir.Conv2d) and conv.weight.shape[2:] == (1, 1) and tuple(conv.padding) == (1, 1)
    assert conv.bias is not None and np.any(conv.bias)  # the folded BN shift


def _kwargs_json(zm) -> str:
    import json
    return json.dumps(zm.kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_cli_exports_a_checkpoint_with_model(tzoo, exported, name, tmp_path):
    """``snncompile export CKPT --model transformer_zoo:FACTORY``: the zoo module is importable
    with the timm stand-ins installed; the graph equals the one exported from the module."""
    zm, model, graph = exported(name)
    torch.save({"state_dict": copy.deepcopy(model).state_dict()}, tmp_path / "ckpt.pt")
    shape = ",".join(map(str, zm.input_shape))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "ckpt.pt"), "--model",
                                       f"transformer_zoo:{zm.model_name}", "--model-kwargs", _kwargs_json(zm),
                                       "--input-shape", shape, "-T", str(zm.timesteps)])
    assert result.exit_code == 0, result.output
    back = load_onnx(tmp_path / "ckpt.onnx")
    assert [n.name for n in back] == [n.name for n in graph]
    x = zm.inputs(4, seed=9)
    np.testing.assert_array_equal(run(back, x).outputs, run(graph, x).outputs)


# -- refusals ------------------------------------------------------------------------------
class _Attn(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.q = nn.Conv1d(8, 8, 1)
        self.op = op

    def forward(self, x):  # x: (T, B, C, N)
        T, B, C, N = x.shape
        q = self.q(x.flatten(0, 1)).reshape(T, B, C, N)
        return self.op(q)


class _Block(nn.Module):
    def __init__(self, op):
        super().__init__()
        from spikingjelly.activation_based import neuron
        self.attn = _Attn(op)
        self.lif = neuron.LIFNode(step_mode="m")

    def forward(self, x):
        x = x.unsqueeze(0).repeat(4, 1, 1, 1, 1).flatten(3)
        return self.lif(self.attn(x))


@pytest.mark.parametrize("op, pattern", [
    (lambda q: q.softmax(dim=-1), r"module 'attn' calls softmax, which is not supported in a spiking model"),
    (lambda q: torch.nn.functional.gelu(q), r"module 'attn' calls gelu, which is not supported"),
    (lambda q: torch.nn.functional.layer_norm(q, (q.shape[-1],)), r"module 'attn' calls layer_norm, which"),
])
def test_non_spiking_operations_are_refused_by_module_and_name(op, pattern):
    with pytest.raises(SnnCompileError, match=pattern):
        from_torch(_Block(op).eval(), (8, 2, 2), 4)


def test_a_layernorm_that_is_called_is_refused_by_name():
    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            from spikingjelly.activation_based import neuron
            self.norm1 = nn.LayerNorm(4)
            self.lif = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            return self.lif(self.norm1(x.unsqueeze(0).repeat(4, 1, 1, 1, 1).flatten(3).transpose(-1, -2)))

    with pytest.raises(SnnCompileError, match=r"module 'norm1' \(torch.nn.modules.normalization.LayerNorm\) "
                                              r"is not supported: it calls layer_norm"):
        from_torch(Normed().eval(), (4, 2, 2), 4)


def test_the_unused_layernorms_of_spikformer_are_no_obstacle(exported):
    """Spikformer builds norm1/norm2 (their parameters are in checkpoints) but never calls them."""
    _, model, graph = exported("spikformer_cifar")
    assert isinstance(model.block[0].norm1, nn.LayerNorm)
    assert not any("norm" in n for n in graph.nx.nodes)
    assert mapping_warnings(graph) == []


# -- the layout pass and folding through layouts, on hand-built graphs ---------------------
def _graph_with(between):
    """input (4, 2, 2) -> Conv2d 1x1 (6 channels) -> ``between`` layouts -> Affine -> Neuron."""
    from snncompile.passes import Affine
    rng = np.random.default_rng(0)
    g = Graph("g", timesteps=4)
    g.add(ir.Input("in", shape=(4, 2, 2)))
    g.add(ir.Conv2d("conv", weight=rng.normal(size=(6, 4, 1, 1)), bias=rng.normal(size=6)), ["in"])
    last = "conv"
    for node in between:
        g.add(node, [last])
        last = node.name
    shape = g.infer_shapes().shape(last)
    scale, shift = rng.uniform(0.5, 2.0, size=shape), rng.normal(size=shape)
    return g, last, shape, scale, shift, Affine


def _fold_equals_scale(between, per_channel_axis):
    """Folding the Affine gives the spikes of the same map as an explicit Scale."""
    from snncompile.passes import canonicalize
    g, last, shape, scale, shift, Affine = _graph_with(between)
    keep = [slice(None) if i == per_channel_axis else slice(0, 1) for i in range(len(shape))]
    scale, shift = (np.array(np.broadcast_to(a[tuple(keep)], shape)) for a in (scale, shift))
    explicit = g.copy()
    explicit.add(ir.Scale("s", weight=scale, bias=shift), [last])
    explicit.add(ir.Neuron("n", shape=shape, threshold=0.5), ["s"])
    explicit.add(ir.Output("out"), ["n"])
    g.add(Affine("a", scale=scale, shift=shift, origin="batchnorm"), [last])
    g.add(ir.Neuron("n", shape=shape, threshold=0.5), ["a"])
    g.add(ir.Output("out"), ["n"])
    folded = canonicalize(g)
    x = np.random.default_rng(1).random((16, 4, 4, 2, 2))
    a, b = run(folded, x).outputs, run(explicit, x).outputs
    assert 0.05 < b.mean() < 0.95 and np.array_equal(a, b)
    return folded


def test_a_per_channel_map_after_layouts_folds_into_the_conv():
    """Conv (6, 2, 2) -> Reshape (6, 4) -> Permute (4, 6): a map per last axis is per conv channel."""
    folded = _fold_equals_scale([ir.Reshape("r", shape=(6, 4)), ir.Permute("p", perm=(1, 0))], 1)
    assert [n.kind for n in folded] == ["Input", "Conv2d", "Reshape", "Permute", "Neuron", "Output"]


def test_a_per_channel_map_after_a_slice_folds_into_the_conv():
    """SpikingResformer's y1 = y[:, :C/h]: the map reaches the conv's sliced channels only."""
    folded = _fold_equals_scale([ir.Reshape("r", shape=(6, 4)), ir.Slice("sl", axis=0, start=2, stop=5)], 0)
    assert "Scale" not in [n.kind for n in folded]


def test_a_map_that_varies_within_a_channel_becomes_a_scale():
    folded = _fold_equals_scale([ir.Reshape("r", shape=(6, 4)), ir.Permute("p", perm=(1, 0))], 0)
    assert [n.kind for n in folded].count("Scale") == 1


def test_inverse_permutes_and_reshape_chains_cancel():
    from snncompile.passes import simplify_layouts
    g = Graph("g", timesteps=2)
    g.add(ir.Input("in", shape=(4, 6)))
    g.add(ir.Permute("p1", perm=(1, 0)), ["in"])
    g.add(ir.Permute("p2", perm=(1, 0)), ["p1"])
    g.add(ir.Reshape("r1", shape=(2, 2, 6)), ["p2"])
    g.add(ir.Reshape("r2", shape=(24, 1)), ["r1"])
    g.add(ir.Permute("unit", perm=(1, 0)), ["r2"])  # moves only a size-1 axis: a reshape
    g.add(ir.Neuron("n", shape=(1, 24)), ["unit"])
    g.add(ir.Output("out"), ["n"])
    simple = simplify_layouts(g)
    assert [n.kind for n in simple] == ["Input", "Reshape", "Neuron", "Output"]
    x = np.random.default_rng(2).random((8, 2, 4, 6)) * 3
    assert np.array_equal(run(simple, x).outputs, run(g, x).outputs) and run(g, x).outputs.any()


def test_sdt_v2_with_the_official_t_of_1_exports_the_same_per_step_graph(tzoo, exported):
    """The official SDT v2 constructor sets ``self.T = 1`` (fine-tuning sets ``model.T``): the
    graph is per step, so exporting for 4 steps gives the same graph, with a warning."""
    zm, model, graph = exported("sdt_v2")
    one = copy.deepcopy(model)
    one.T = 1
    with pytest.warns(MappingWarning, match=r"repeats its input 1 times .* export is for 4 time steps"):
        back = from_torch(one, zm.input_shape, zm.timesteps, name="sdt_v2")
    assert [n.name for n in back] == [n.name for n in graph]
    x = zm.inputs(3, seed=4)
    np.testing.assert_array_equal(run(back, x).outputs, run(graph, x).outputs)


def test_spikformer_scales_join_into_one_per_block(exported):
    """(q @ k^T) * 0.125, then attn_lif's input gain 1/tau after @ v: one Scale of 0.0625 on the
    attention map (the matmul is linear in it); no Scale lands on spikes."""
    _, _, graph = exported("spikformer_cifar")
    scales = {n.name: n for n in graph if isinstance(n, ir.Scale)}
    assert sorted(scales) == ["block.0.attn.matmul.scale", "block.1.attn.matmul.scale", "mean.mean"]
    assert float(scales["block.0.attn.matmul.scale"].weight) == 0.0625
    assert scales["block.0.attn.matmul.scale"].bias is None
    assert float(scales["mean.mean"].weight) == 1 / 16


def test_a_neuron_subclass_that_changes_an_equation_is_refused():
    """SpikingResformer's ``LIF(LIFNode)`` only sets constructor defaults and maps as a LIFNode;
    a subclass that overrides a method may compute something else and is refused by name."""
    from spikingjelly.activation_based import neuron

    class Charged(neuron.LIFNode):
        def neuronal_charge(self, x):
            self.v = self.v + x

    with pytest.raises(SnnCompileError, match=r"module '1' \(.*Charged\): this neuron type is not supported"):
        from_torch(nn.Sequential(nn.Linear(4, 4), Charged()), (4,), 3)


def test_a_bn_and_pad_layer_with_another_border_is_refused(tzoo):
    """BNAndPadLayer is recognised by its attributes; one whose border is not BN(0) is refused."""
    from spikingjelly.activation_based import neuron

    class ZeroBorder(tzoo.BNAndPadLayer):
        def forward(self, input):
            return nn.functional.pad(self.bn(input), [self.pad_pixels] * 4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)
            self.pad = ZeroBorder(1, 2)
            self.lif = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            x = x.unsqueeze(0).repeat(2, 1, 1, 1, 1)
            return self.lif(self.pad(self.conv(x.flatten(0, 1))).reshape(2, -1, 2, 6, 6))

    net = Net().eval()
    with torch.no_grad():
        net.pad.bn.bias.fill_(0.5)
    with pytest.raises(SnnCompileError, match=r"module 'pad' \(ZeroBorder\) pads its BatchNorm output with "
                                              r"values other than the BatchNorm of zero"):
        from_torch(net, (2, 4, 4), 2)
