"""Each neuron setting on its own: Linear -> neuron, random weights and inputs, T=12,
float64 eager vs the exported graph (spikes identical). A grid over the settings the
frontend maps, in both SpikingJelly step modes."""
import itertools

import numpy as np
import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import functional as sjf
from spikingjelly.activation_based import neuron as sjn
from torch import nn

import zoo
from snncompile.frontend import from_torch
from snncompile.targets import run

T, F_IN, F_OUT = 12, 6, 10


def _sj_cases():
    for step_mode, (v_reset, decay_input) in itertools.product(
            ("s", "m"), [(None, True), (0.0, True), (-0.4, False), (0.3, True)]):
        yield f"IF-{step_mode}-vr{v_reset}", step_mode, lambda v=v_reset, m=step_mode: sjn.IFNode(
            v_reset=v, v_threshold=0.9, step_mode=m)
        yield f"LIF-{step_mode}-vr{v_reset}-di{decay_input}", step_mode, \
            lambda v=v_reset, d=decay_input, m=step_mode: sjn.LIFNode(
                tau=3.0, decay_input=d, v_reset=v, v_threshold=0.7, step_mode=m)
        yield f"PLIF-{step_mode}-vr{v_reset}-di{decay_input}", step_mode, \
            lambda v=v_reset, d=decay_input, m=step_mode: sjn.ParametricLIFNode(
                init_tau=1.7, decay_input=d, v_reset=v, step_mode=m)


def _snntorch_cases():
    for mech, delay in itertools.product(("subtract", "zero", "none"), (True, False)):
        if mech == "subtract" and not delay:
            continue  # exact only below 2*threshold: see test_frontend.py
        yield f"Leaky-{mech}-delay{delay}", "s", lambda m=mech, d=delay: snn.Leaky(
            beta=torch.linspace(0.5, 0.95, F_OUT), threshold=0.8, reset_mechanism=m, reset_delay=d,
            init_hidden=True, surrogate_disable=True)
        if not (mech == "zero" and delay):
            yield f"Synaptic-{mech}-delay{delay}", "s", lambda m=mech, d=delay: snn.Synaptic(
                alpha=0.7, beta=0.85, reset_mechanism=m, reset_delay=d, init_hidden=True,
                surrogate_disable=True)


def _norse_cases():
    import norse.torch as norse
    yield "LIFCell", "s", lambda: _NorseStep(norse.LIFCell(norse.LIFParameters(
        tau_mem_inv=torch.tensor(300.0), v_leak=torch.tensor(-0.2), v_reset=torch.tensor(0.25),
        v_th=torch.tensor(0.5))))
    yield "LIFBoxCell-subtract", "s", lambda: _NorseStep(norse.LIFBoxCell(norse.LIFBoxParameters(
        tau_mem_inv=torch.tensor(200.0), v_th=torch.tensor(0.4), v_leak=torch.tensor(0.1),
        reset_method=norse.functional.reset.reset_subtract)))


class _NorseStep(nn.Module):
    """A Norse cell as the last layer of a loop model."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell


CASES = list(_sj_cases()) + list(_snntorch_cases()) + list(_norse_cases())


class _Loop(nn.Module):
    def __init__(self, fc, cell):
        super().__init__()
        self.fc, self.cell = fc, cell

    def forward(self, x):
        state, out = None, []
        for t in range(T):
            z, state = self.cell(self.fc(x[t]), state)
            out.append(z)
        return torch.stack(out)


@pytest.mark.parametrize("case, step_mode, make", CASES, ids=[c[0] for c in CASES])
def test_single_neuron_layer_is_exact(case, step_mode, make):
    torch.manual_seed(0)
    neuron = make()
    fc = nn.Linear(F_IN, F_OUT)
    with torch.no_grad():
        fc.weight.mul_(2.5)
    if isinstance(neuron, _NorseStep):
        model, style = _Loop(fc, neuron.cell), "loop"
    else:
        model = nn.Sequential(fc, neuron)
        if step_mode == "m":
            sjf.set_step_mode(model, "m")  # nn.Linear works on (T, N, F) as is
        style = "multistep" if step_mode == "m" else "step"
    zm = zoo.ZooModel(case, None, (F_IN,), T, style, "spikes")
    graph = from_torch(model.eval(), (F_IN,), T)
    x = zm.inputs(24, seed=3)
    expected = zm.torch_outputs(model.double(), x)
    got = run(graph, x).outputs
    assert 0.02 < expected.mean() < 0.8, f"weak test: rate {expected.mean()}"
    assert np.array_equal(got, expected)
