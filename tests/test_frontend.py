"""from_torch beyond the zoo: time styles, caveats and every refusal with its message."""
import warnings

import numpy as np
import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import neuron as sjn
from torch import nn

import zoo
from snncompile.errors import SnnCompileError
from snncompile.frontend import MappingWarning, from_torch, mapping_warnings
from snncompile.targets import run


def _eager_vs_reference(model, zm_like: zoo.ZooModel, n=12, seed=0):
    graph = from_torch(model, zm_like.input_shape, zm_like.timesteps)
    x = zm_like.inputs(n, seed)
    return run(graph, x).outputs, zm_like.torch_outputs(model.double(), x)


class StaticLoop(nn.Module):
    """snnTorch loop over a static input (the same image every step), no x[step]."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.fc = nn.Linear(6, 5)
        self.lif = snn.Leaky(beta=0.8, surrogate_disable=True)

    def forward(self, x):
        mem = self.lif.init_leaky()
        out = []
        for _ in range(self.T):
            spk, mem = self.lif(self.fc(x), mem)
            out.append(spk)
        return torch.stack(out)


def test_loop_model_over_a_static_input():
    torch.manual_seed(0)
    model = StaticLoop(7).eval()
    with torch.no_grad():
        model.fc.weight.mul_(3)
    graph = from_torch(model, (6,), 7)
    assert [n.kind for n in graph] == ["Input", "Linear", "Neuron", "Output"]
    x = np.random.default_rng(0).random((10, 6))
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(x)).transpose(0, 1).numpy()
    got = run(graph, x).outputs
    assert got.sum() > 0 and np.array_equal(got, expected)


def test_snntorch_subtract_without_delay_warns_and_is_exact_below_twice_threshold():
    zm = zoo.ZooModel("sub_nodelay", lambda T: nn.Sequential(
        nn.Flatten(), nn.Linear(128, 20), snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False,
                                                    surrogate_disable=True)),
        (2, 8, 8), 8, "step", "spikes", 1.0)
    model = zm.build()
    with pytest.warns(MappingWarning, match=r"module '2' \(snntorch Leaky\).*2\*threshold"):
        graph = from_torch(model, zm.input_shape, zm.timesteps)
    assert len(mapping_warnings(graph)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingWarning)
        got, expected = _eager_vs_reference(model, zm)
        assert got.sum() > 0 and np.array_equal(got, expected)
        # the caveat is real: with currents above 2*threshold snnTorch skips spikes
        zm.gain = 8.0
        got, expected = _eager_vs_reference(zm.build(), zm)
    assert (got != expected).any() and expected.sum() < got.sum()


def test_output_readout_modes():
    assert zoo.MODELS["sj_conv_maxpool"].graph().output.mode == "potential"
    assert zoo.MODELS["sj_sew"].graph().output.mode == "spikes"


def test_canonical_graph_has_batchnorm_and_gains_folded():
    graph = zoo.MODELS["sj_ms"].graph()
    kinds = [n.kind for n in graph]
    assert "Affine" not in kinds and kinds.count("Add") == 1
    for node in graph:
        if node.kind == "Neuron":
            assert float(np.max(node.reset_value)) == 0.0


def _refuse(model, shape, pattern, T=4):
    with pytest.raises(SnnCompileError, match=pattern):
        from_torch(model, shape, T)


class Sigmoidal(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.sn = sjn.IFNode()

    def forward(self, x):
        return self.sn(torch.sigmoid(self.fc(x)))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.sn1, self.sn2 = sjn.IFNode(), sjn.IFNode()

    def forward(self, x):
        return self.sn2(self.fc(self.sn1(self.fc(x))))


class AddConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.sn = sjn.IFNode()

    def forward(self, x):
        return self.sn(self.fc(x) + 1.0)


def test_unsupported_function_names_the_operation():
    _refuse(Sigmoidal(), (4,), r"operation 'sigmoid' \('sigmoid'\).* is not supported")


def test_unsupported_module_inside_a_container_names_its_path():
    _refuse(nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.GELU()), sjn.IFNode()), (4,),
            r"module '0.1' \(torch.nn.modules.activation.GELU\) is not supported")


def test_unsupported_neuron_type_is_named():
    _refuse(nn.Sequential(nn.Linear(4, 4), sjn.KLIFNode()), (4,),
            r"module '1' \(.*KLIFNode\): this neuron type is not supported")


def test_a_module_used_twice_becomes_two_nodes_with_shared_parameters():
    torch.manual_seed(0)
    model = Shared().eval()
    with torch.no_grad():
        model.fc.weight.mul_(3)
        model.fc.bias.fill_(0.3)
    graph = from_torch(model, (4,), 6)
    assert [n.name for n in graph] == ["input", "fc", "sn1", "fc_1", "sn2", "output"]
    assert np.array_equal(graph.node("fc").weight, graph.node("fc_1").weight)
    zm = zoo.ZooModel("shared", None, (4,), 6, "step", "spikes")
    x = zm.inputs(20, 0)
    expected = zm.torch_outputs(model.double(), x)
    assert 0.02 < expected.mean() < 0.6 and np.array_equal(run(graph, x).outputs, expected)


def test_a_neuron_used_twice_in_one_step_is_refused():
    class TwiceNeuron(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.sn = nn.Linear(4, 4), nn.Linear(4, 4), sjn.IFNode()

        def forward(self, x):
            return self.sn(self.fc2(self.sn(self.fc1(x))))

    _refuse(TwiceNeuron(), (4,), r"module 'sn' \(.*IFNode\) is called on two different inputs in one step")


def test_add_of_a_constant_is_refused():
    _refuse(AddConstant(), (4,), r"only '\+' of two network tensors")


@pytest.mark.parametrize("neuron, pattern", [
    (lambda: snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True, reset_mechanism="zero"),
     r"Synaptic with reset_mechanism='zero' and reset_delay=True.*use reset_delay=False"),
    (lambda: snn.Leaky(beta=0.5, init_hidden=True, inhibition=True), r"inhibition=True"),
    (lambda: snn.Leaky(beta=0.5, init_hidden=True, graded_spikes_factor=2.0), r"graded_spikes_factor"),
    (lambda: snn.Leaky(beta=0.0, init_hidden=True), r"reset_delay=True with beta == 0"),
    (lambda: snn.Leaky(beta=0.5, init_hidden=True, threshold=-1.0), r"threshold must be positive"),
])
def test_snntorch_settings_without_an_exact_mapping(neuron, pattern):
    _refuse(nn.Sequential(nn.Linear(4, 4), neuron()), (4,), r"module '1' \(snntorch.*" + pattern)


def test_multistep_model_with_a_plain_conv_fails_with_the_module_named():
    from spikingjelly.activation_based import functional
    net = nn.Sequential(nn.Conv2d(2, 4, 3), sjn.IFNode())
    functional.set_step_mode(net, "m")
    _refuse(net, (2, 8, 8), r"does not run on inputs of shape \(T, N, 2, 8, 8\) in module '0' \(Conv2d\)")


def test_unsupported_layer_options_are_refused():
    _refuse(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), sjn.IFNode()), (2, 6, 6),
            r"module '0' .*padding_mode='circular' is not supported")
    _refuse(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), sjn.IFNode()), (2, 5, 5), r"ceil_mode")


def test_nan_weights_are_named():
    model = nn.Sequential(nn.Linear(4, 4), sjn.IFNode())
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    _refuse(model, (4,), r"parameter '0.bias' of the model has 1 NaN/Inf")


def test_flatten_inside_a_seq_to_ann_container():
    from spikingjelly.activation_based import functional, layer
    torch.manual_seed(0)
    net = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 8)),
                        sjn.IFNode(v_reset=None))
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0][2].weight.mul_(4)
    graph = from_torch(net.eval(), (2, 6, 6), 5)
    assert [n.name for n in graph] == ["input", "0.0", "0.1", "0.2", "1", "output"]
    zm = zoo.ZooModel("c", None, (2, 6, 6), 5, "multistep", "spikes")
    x = zm.inputs(10, 0)
    expected = zm.torch_outputs(net.double(), x)
    assert expected.sum() > 0 and np.array_equal(run(graph, x).outputs, expected)


def test_model_returning_a_membrane_is_refused():
    class MemOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(4, 4), snn.Leaky(beta=0.9, surrogate_disable=True)

        def forward(self, x):
            spk, mem = self.lif(self.fc(x))
            return mem

    _refuse(MemOut(), (4,), r"its output is the state of neuron 'lif'")


def test_adaptive_avg_pool_becomes_avg_pool_when_it_divides():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), sjn.IFNode(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 5), sjn.IFNode())
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(15)
    graph = from_torch(net.eval(), (2, 8, 8), 5)
    pool = graph.node("2")
    assert pool.kind == "AvgPool2d" and pool.kernel_size == (4, 4) and pool.stride == (4, 4)
    zm = zoo.ZooModel("a", None, (2, 8, 8), 5, "step", "spikes")
    x = zm.inputs(10, 0)
    expected = zm.torch_outputs(net.double(), x)
    assert expected.sum() > 0 and np.array_equal(run(graph, x).outputs, expected)
    _refuse(nn.Sequential(nn.AdaptiveAvgPool2d(3), sjn.IFNode()), (2, 8, 8), r"output size \(3, 3\) that does not divide")


def test_concatenation_inside_the_network_is_refused():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.sn = nn.Linear(4, 2), nn.Linear(4, 2), sjn.IFNode()

        def forward(self, x):
            return self.sn(torch.cat([self.a(x), self.b(x)], 1))

    _refuse(Cat(), (4,), r"module 'sn' \(.*IFNode\): its input is a stack/cat of tensors \(allowed only as the model's per-step output\)")
