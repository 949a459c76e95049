"""Capture by running: the idioms of real model code that symbolic tracing could not follow."""
import warnings

import numpy as np
import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based import neuron as sjn
from torch import nn

import zoo
from snncompile.errors import SnnCompileError
from snncompile.frontend import MappingWarning, from_torch
from snncompile.targets import run


def _exact(zm: zoo.ZooModel, n=12):
    model = zm.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingWarning)
        graph = from_torch(model, zm.input_shape, zm.timesteps)
    x = zm.inputs(n, 0)
    res = run(graph, x, record=True)
    expected = zm.torch_outputs(model.double(), x)
    for node in graph:
        if node.kind == "Neuron":
            rate = res.layer_counts[node.name].mean() / zm.timesteps
            assert 0.02 <= rate <= 0.4, f"{node.name} fires at {rate:.3f}"
    if graph.output.mode == "spikes":
        assert np.array_equal(res.outputs, expected)
    else:
        np.testing.assert_allclose(res.outputs, expected, rtol=1e-9, atol=1e-12)
    return graph


class ZerosRecurrence(nn.Module):
    """Hand-written state from torch.zeros, a loop over x.shape[0], x.size(0) in a view."""

    def __init__(self, T):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2 * 8 * 8, 16), nn.Linear(16, 10)
        self.lif1, self.lif2 = snn.Leaky(beta=0.9, surrogate_disable=True), snn.Leaky(beta=0.8, surrogate_disable=True)

    def forward(self, data):
        mem1 = torch.zeros(data.size(1), 16, dtype=data.dtype)
        mem2 = torch.zeros(data.size(1), 10, dtype=data.dtype)
        out = []
        for t in range(data.shape[0]):
            x = data[t].view(data.size(1), -1)
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            out.append(spk2)
        return torch.stack(out, dim=0)


class NdimBranch(nn.Module):
    """SpikingJelly multi-step code that branches on x.ndim and repeats a static image T times."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.conv = layer.Conv2d(2, 4, 3, padding=1)
        self.sn1 = sjn.IFNode(v_reset=None)
        self.fc = layer.Linear(4 * 8 * 8, 10)
        self.sn2 = sjn.LIFNode(tau=2.0)
        functional.set_step_mode(self, "m")

    def forward(self, x):
        if x.ndim == 4:
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.sn1(self.conv(x))
        T, B = x.shape[:2]
        x = x.flatten(0, 1).flatten(1).reshape(T, B, -1)  # (T*B, C*H*W) and back
        return self.sn2(self.fc(x))


class NorseSequentialState(nn.Module):
    def __init__(self, T):
        super().__init__()
        import norse.torch as norse
        self.net = norse.SequentialState(
            nn.Flatten(), nn.Linear(2 * 8 * 8, 16),
            norse.LIFCell(norse.LIFParameters(tau_mem_inv=torch.tensor(200.0), v_th=torch.tensor(0.3))),
            nn.Linear(16, 10), norse.LIFBoxCell(norse.LIFBoxParameters(v_th=torch.tensor(0.3))))

    def forward(self, x):
        state, out = None, []
        for t in range(x.shape[0]):
            z, state = self.net(x[t], state)  # state: a list of state tuples, assigned item by item
            out.append(z)
        return torch.stack(out)


class Voting(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 40), sjn.LIFNode(tau=2.0),
                                 layer.VotingLayer(4))

    def forward(self, x):
        return self.net(x)


def test_state_from_zeros_and_loops_over_the_data_shape():
    graph = _exact(zoo.ZooModel("zeros", ZerosRecurrence, (2, 8, 8), 6, "loop", "spikes", 3.0))
    assert [n.kind for n in graph] == ["Input", "Flatten", "Linear", "Neuron", "Linear", "Neuron", "Output"]


def test_control_flow_on_ndim_and_time_batch_merges():
    zm = zoo.ZooModel("ndim", NdimBranch, (2, 8, 8), 5, "multistep", "spikes", 4.0)
    graph = _exact(zm)
    assert graph.meta["time_style"] == "multi-step"
    # the same model given static images: it repeats them over time itself
    model = zm.build()
    graph = from_torch(model, zm.input_shape, zm.timesteps)
    x = zm.inputs(6, 1)[:, 0]
    functional.reset_net(model)
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(x).double()).transpose(0, 1).numpy()
    assert expected.sum() > 0 and np.array_equal(run(graph, x).outputs, expected)


def test_norse_sequential_state():
    _exact(zoo.ZooModel("norse_seq", NorseSequentialState, (2, 8, 8), 6, "loop", "spikes", 6.0))


def test_voting_layer_is_a_mean_over_groups():
    graph = _exact(zoo.ZooModel("vote", Voting, (2, 8, 8), 6, "step", "spikes", 6.0))
    assert graph.output.mode == "potential" and graph.node("net.3").weight.shape == (10, 40)


def test_a_loop_count_fixed_in_the_model_warns_when_timesteps_differ():
    from test_frontend import StaticLoop
    with pytest.warns(MappingWarning, match=r"loops 6 times inside forward, but --timesteps is 4"):
        from_torch(StaticLoop(6), (6,), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MappingWarning)
        from_torch(StaticLoop(4), (6,), 4)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(4, 4)

    def forward(self, x):
        return torch.softmax(self.q(x), dim=-1)


class WithAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.sn = Attention(), sjn.IFNode()

    def forward(self, x):
        return self.sn(self.attn(x))


def test_an_unsupported_operation_is_named_with_its_module():
    with pytest.raises(SnnCompileError, match=r"operation 'softmax' \('softmax'\) in module 'attn' "
                                              r"\(test_frontend_capture.Attention\) is not supported"):
        from_torch(WithAttention(), (4,), 4)


def test_an_unused_unsupported_operation_does_not_block_the_export():
    class Logs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = nn.Linear(4, 4), sjn.IFNode()

        def forward(self, x):
            self.last_norm = torch.linalg.norm(x)  # bookkeeping, not part of the network
            return self.sn(self.fc(x))

    assert [n.kind for n in from_torch(Logs(), (4,), 3)] == ["Input", "Linear", "Neuron", "Output"]


class NorseRecurrent(nn.Module):
    """Norse LIFRecurrentCell (its own input and recurrent weights), F.max_pool2d, x[t, :]."""

    def __init__(self, T):
        super().__init__()
        import norse.torch as norse
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.lif0 = norse.LIFCell(norse.LIFParameters(v_th=torch.tensor(0.2)))
        self.rec = norse.LIFRecurrentCell(4 * 4 * 4, 12, p=norse.LIFParameters(
            tau_mem_inv=torch.tensor(300.0), v_th=torch.tensor(0.3)))
        self.fc = nn.Linear(12, 10)
        self.out = norse.LIFCell(norse.LIFParameters(v_th=torch.tensor(0.2)))

    def forward(self, x):
        s0 = s1 = s2 = None
        out = []
        for t in range(x.shape[0]):
            z, s0 = self.lif0(self.conv(x[t, :]), s0)
            z = torch.nn.functional.max_pool2d(z, 2, 2)
            z, s1 = self.rec(z.view(-1, 4 * 4 * 4), s1)
            z, s2 = self.out(self.fc(torch.nn.functional.relu(z)), s2)
            out.append(z)
        return torch.stack(out)


def test_norse_recurrent_cell_and_functional_pooling():
    graph = _exact(zoo.ZooModel("norse_rec", NorseRecurrent, (2, 8, 8), 8, "loop", "spikes", 4.0))
    kinds = [n.kind for n in graph]
    assert kinds.count("MaxPool2d") == 1 and kinds.count("Neuron") == 3
    assert any(graph.delay(s, d) for s, d in graph.nx.edges)


class EnlargingPool(nn.Module):
    """SpikingJelly VGG's head in small: AdaptiveAvgPool2d((3, 3)) of a 1x1 map, flatten, Linear."""

    def __init__(self, T):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), sjn.IFNode(), nn.MaxPool2d(8))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(4 * 9, 10), sjn.IFNode())

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_an_enlarging_adaptive_pool_folds_into_the_next_linear():
    graph = _exact(zoo.ZooModel("enlarge", EnlargingPool, (2, 8, 8), 6, "step", "spikes", 2.0))
    assert [n.kind for n in graph] == ["Input", "Conv2d", "Neuron", "MaxPool2d", "Flatten", "Linear",
                                       "Neuron", "Output"]
    assert graph.node("classifier.0").weight.shape == (10, 4)
    with pytest.raises(SnnCompileError, match=r"AdaptiveAvgPool2d that enlarges .* only before flatten and a Linear"):
        from_torch(nn.Sequential(nn.AdaptiveAvgPool2d(4), sjn.IFNode()), (2, 2, 2), 3)


def test_ottt_neurons_are_refused_with_what_to_do_instead():
    with pytest.raises(SnnCompileError, match=r"module '1' \(.*OTTTLIFNode\): OTTT .* export the trained network "
                                              r"rebuilt with LIFNode"):
        from_torch(nn.Sequential(nn.Linear(4, 4), sjn.OTTTLIFNode()), (4,), 3)


@pytest.mark.parametrize("steps, pattern", [
    (lambda T: [T - 1], r"reads step 5 of a sequence after step -1"),
    (lambda T: list(reversed(range(T))), r"reads step 5 of a sequence after step -1"),
    (lambda T: [0, 2, 4], r"reads step 2 of a sequence after step 0"),
])
def test_reading_steps_out_of_order_is_refused(steps, pattern):
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = nn.Linear(4, 4), sjn.IFNode()

        def forward(self, x):
            return torch.stack([self.sn(self.fc(x[t])) for t in steps(x.shape[0])])

    with pytest.raises(SnnCompileError, match=pattern):
        from_torch(Picky(), (4,), 6)


def test_a_transpose_or_an_integer_cast_of_currents_is_refused_even_when_shapes_match():
    class T2(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = nn.Linear(2, 2), sjn.IFNode()

        def forward(self, x):
            return self.sn(self.fc(x).T)  # (B=2, 2): same shape, another meaning

    class Cast(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = nn.Linear(4, 4), sjn.IFNode()

        def forward(self, x):
            return self.sn(self.fc(x).to(torch.int32).float())

    with pytest.raises(SnnCompileError, match=r"operation '__get__.T'"):
        from_torch(T2(), (2,), 3)
    with pytest.raises(SnnCompileError, match=r"operation 'to'"):
        from_torch(Cast(), (4,), 3)


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda: zoo.ZooModel("norse_rec", NorseRecurrent, (2, 8, 8), 8, "loop", "spikes", 4.0),
    lambda: zoo.ZooModel("vote", Voting, (2, 8, 8), 6, "step", "spikes", 6.0),
    lambda: zoo.ZooModel("enlarge", EnlargingPool, (2, 8, 8), 6, "step", "spikes", 2.0),
], ids=["norse_recurrent", "voting", "enlarging_pool"])
def test_emulator_fixed_equals_lava_fixed(make):
    from snncompile.quantize import quantize
    from snncompile.targets import emulator, lava
    zm = make()
    graph = from_torch(zm.build(), zm.input_shape, zm.timesteps)
    qg, _ = quantize(graph, calib=zm.inputs(16, 0))
    x = zm.inputs(2, 1)
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = lava.run(qg, x, precision="fixed", record=True)
    assert np.array_equal(lv.outputs, em.outputs)
    for node in qg:
        if node.kind == "Neuron":
            assert em.layer_counts[node.name].sum() > 0, node.name
            assert np.array_equal(lv.layer_counts[node.name], em.layer_counts[node.name]), node.name


def test_iterating_over_the_steps_in_order_works_and_reversed_is_refused():
    class Iter(nn.Module):
        def __init__(self, T, backwards=False):
            super().__init__()
            self.backwards = backwards
            self.fc, self.sn = nn.Linear(2 * 8 * 8, 10), sjn.IFNode()

        def forward(self, x):
            steps = list(x)
            steps = steps[::-1] if self.backwards else steps
            return torch.stack([self.sn(self.fc(xt.flatten(1))) for xt in steps])

    _exact(zoo.ZooModel("iter", Iter, (2, 8, 8), 6, "loop", "spikes", 3.0))
    with pytest.raises(SnnCompileError, match=r"reads step 5 of a sequence after step -1"):
        from_torch(Iter(6, backwards=True), (2, 8, 8), 6)


def test_state_kept_in_python_across_steps_is_refused():
    class RunningSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn, self.out = nn.Linear(4, 4), sjn.IFNode(), nn.Linear(4, 2)

        def forward(self, x):
            acc = None
            for t in range(x.shape[0]):
                spk = self.sn(self.fc(x[t]))
                acc = spk if acc is None else acc + spk  # a spike count kept across steps
            return self.out(acc)

    with pytest.raises(SnnCompileError, match=r"uses the output of 'sn' from an earlier time step"):
        from_torch(RunningSum(), (4,), 5)
