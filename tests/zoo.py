"""The architecture matrix: small seeded SNNs covering every module and neuron setting
the frontend supports, each with a way to run it in PyTorch eager mode.

``MODELS[name]`` is a :class:`ZooModel`: ``.build()`` (seeded, eval mode, weights that
make neurons fire moderately), ``.input_shape``, ``.timesteps``, ``.inputs(n, seed)``
(spike trains (n, T, *shape) or static images (n, *shape)), ``.torch_outputs(model, x)``
((n, T, n_out) per-step eager outputs: spikes, or readout currents for a potential
readout) and ``.graph()`` (the exported canonical IR).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

import snntorch as snn
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import layer as sj_layer
from spikingjelly.activation_based import neuron as sj_neuron


def _scale_weights(model: nn.Module, gain: float) -> nn.Module:
    """Multiply every Linear/Conv weight by ``gain`` (the default init is too quiet for SNNs)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return model


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics so BatchNorm folding is really tested."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.1)
    return model


def _stk_leaky(**kw):
    # surrogate_disable: the default surrogate is a closure, which torch.save(model) cannot pickle.
    return snn.Leaky(surrogate_disable=True, **kw)


def _stk_synaptic(**kw):
    return snn.Synaptic(surrogate_disable=True, **kw)


# -- SpikingJelly, single step ------------------------------------------------
def sj_mlp() -> nn.Module:
    """MLP, LIF with decay_input=True (input gain 1/tau folded into the Linear)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(2 * 8 * 8, 32), sj_neuron.LIFNode(tau=2.0, decay_input=True),
        nn.Dropout(0.2), nn.Linear(32, 10), sj_neuron.LIFNode(tau=3.0, decay_input=True))


def sj_conv_maxpool() -> nn.Module:
    """Conv + BN + IF (hard reset to 0) + MaxPool, ending in a bare Linear readout."""
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), sj_neuron.IFNode(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), sj_neuron.IFNode(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def sj_if_soft_avgpool() -> nn.Module:
    """Soft-reset IF (v_reset=None) with AvgPool2d and Identity."""
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), sj_neuron.IFNode(v_reset=None), nn.AvgPool2d(2),
        nn.Identity(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10), sj_neuron.IFNode(v_reset=None))


def sj_lif_hard_vreset() -> nn.Module:
    """Hard reset to v_reset != 0, decay_input=False, and a ParametricLIF (decay_input=True)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(2 * 8 * 8, 24),
        sj_neuron.LIFNode(tau=4.0, decay_input=False, v_reset=-0.3, v_threshold=0.8),
        nn.Linear(24, 10), nn.BatchNorm1d(10),
        sj_neuron.ParametricLIFNode(init_tau=2.5, v_reset=0.2))


class SEWBlock(nn.Module):
    """SEW-ResNet basic block with ADD: spikes of the block + spikes of the shortcut."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1, self.sn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), \
            sj_neuron.IFNode(v_reset=None)
        self.conv2, self.bn2, self.sn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), \
            sj_neuron.IFNode(v_reset=None)

    def forward(self, x):
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        return out + x


class SEWNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  sj_neuron.IFNode(v_reset=None))
        self.block = SEWBlock(8)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.out = sj_neuron.IFNode(v_reset=None)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.out(self.fc(torch.flatten(self.pool(x), 1)))


class MSBlock(nn.Module):
    """MS-ResNet block: neurons before convs, the shortcut adds membrane currents."""

    def __init__(self, c: int):
        super().__init__()
        self.sn1 = sj_neuron.LIFNode(tau=2.0, decay_input=True)
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.sn2 = sj_neuron.LIFNode(tau=2.0, decay_input=True)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.bn1(self.conv1(self.sn1(x)))
        out = self.bn2(self.conv2(self.sn2(out)))
        return out + x


class MSNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.block = MSBlock(6)
        self.sn = sj_neuron.LIFNode(tau=2.0, decay_input=True)
        self.fc = nn.Linear(6 * 8 * 8, 10)
        self.out = sj_neuron.IFNode()

    def forward(self, x):
        x = self.sn(self.block(self.stem(x)))
        return self.out(self.fc(x.view(x.size(0), -1)))


# -- SpikingJelly, multi step -------------------------------------------------
def sj_plif_multistep() -> nn.Module:
    """Multi-step (T, N, ...) model: SeqToANNContainer, ParametricLIF both decay_input ways."""
    net = nn.Sequential(
        sj_layer.SeqToANNContainer(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)),
        sj_neuron.ParametricLIFNode(init_tau=2.0, decay_input=True, v_reset=None),
        sj_layer.MaxPool2d(2), sj_layer.Flatten(),
        sj_layer.Linear(6 * 4 * 4, 10),
        sj_neuron.ParametricLIFNode(init_tau=3.0, decay_input=False))
    sj_functional.set_step_mode(net, "m")
    return net


# -- snnTorch ---------------------------------------------------------------
class SnnTorchLoop(nn.Module):
    """Tutorial style: forward loops over the steps of x (T, N, F)."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T
        self.fc1 = nn.Linear(2 * 8 * 8, 32)
        self.lif1 = _stk_leaky(beta=0.9)  # subtract, reset_delay=True (defaults)
        self.fc2 = nn.Linear(32, 16)
        self.lif2 = _stk_leaky(beta=0.8, reset_mechanism="zero")  # reset_delay=True
        self.fc3 = nn.Linear(16, 10)
        self.lif3 = _stk_leaky(beta=0.7, threshold=0.5, reset_mechanism="none")

    def forward(self, x):
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(self.T):
            spk1, mem1 = self.lif1(self.fc1(x[step].flatten(1)), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk3, mem3 = self.lif3(self.fc3(spk2), mem3)
            spk_rec.append(spk3)
            mem_rec.append(mem3)
        return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)


class SnnTorchSynapticLoop(nn.Module):
    """Synaptic (alpha, beta) and reset_delay=False in a loop model."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T
        self.fc1 = nn.Linear(2 * 8 * 8, 24)
        self.syn1 = _stk_synaptic(alpha=0.6, beta=0.85)  # subtract, reset_delay=True
        self.fc2 = nn.Linear(24, 16)
        self.syn2 = _stk_synaptic(alpha=0.5, beta=0.9, reset_mechanism="zero", reset_delay=False)
        self.fc3 = nn.Linear(16, 10)
        self.lif3 = _stk_leaky(beta=0.9, reset_mechanism="zero", reset_delay=False)

    def forward(self, x):
        syn1, mem1 = self.syn1.init_synaptic()
        syn2, mem2 = self.syn2.init_synaptic()
        mem3 = self.lif3.init_leaky()
        out = []
        for step in range(self.T):
            spk1, syn1, mem1 = self.syn1(self.fc1(x[step].flatten(1)), syn1, mem1)
            spk2, syn2, mem2 = self.syn2(self.fc2(spk1), syn2, mem2)
            spk3, mem3 = self.lif3(self.fc3(spk2), mem3)
            out.append(spk3)
        return torch.stack(out)


def snntorch_step() -> nn.Module:
    """init_hidden=True neurons called once per step (single-step style), conv + avgpool."""
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        _stk_leaky(beta=0.9, init_hidden=True, reset_mechanism="zero", reset_delay=False),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 10),
        _stk_leaky(beta=0.8, init_hidden=True))  # subtract, reset_delay=True


# -- Norse -------------------------------------------------------------------
class NorseLoop(nn.Module):
    """Norse LIFCell (v_leak != 0, v_reset != 0) and LIFBoxCell looped over x (T, N, F)."""

    def __init__(self, T: int):
        super().__init__()
        import norse.torch as norse
        self.T = T
        self.fc1 = nn.Linear(2 * 8 * 8, 24)
        self.lif1 = norse.LIFCell(norse.LIFParameters(
            tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(250.0),
            v_leak=torch.tensor(0.1), v_th=torch.tensor(0.6), v_reset=torch.tensor(-0.1)))
        self.fc2 = nn.Linear(24, 10)
        self.lif2 = norse.LIFBoxCell(norse.LIFBoxParameters(
            tau_mem_inv=torch.tensor(300.0), v_th=torch.tensor(0.5)))

    def forward(self, x):
        s1 = s2 = None
        out = []
        for t in range(self.T):
            z1, s1 = self.lif1(self.fc1(x[t].flatten(1)), s1)
            z2, s2 = self.lif2(self.fc2(z1), s2)
            out.append(z2)
        return torch.stack(out)


# -- the matrix -------------------------------------------------------------------
@dataclass
class ZooModel:
    name: str
    builder: Callable[[int], nn.Module]
    input_shape: tuple
    timesteps: int
    #: "step": model(x_t) per step; "multistep": model(x[T, N, ...]); "loop": forward loops over x[T, N, ...].
    style: str
    #: "spikes": (n, T, *shape) Bernoulli trains; "static": (n, *shape) images shown every step.
    input_kind: str
    gain: float = 1.0
    description: str = ""

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        model = _randomize_bn(_scale_weights(self.builder(self.timesteps), self.gain))
        return model.eval()

    def inputs(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.input_kind == "static":
            return rng.random((n,) + self.input_shape).astype(np.float32)
        return (rng.random((n, self.timesteps) + self.input_shape) < 0.3).astype(np.float32)

    def sequence(self, x: np.ndarray) -> np.ndarray:
        """(n, T, *shape) whatever the input kind."""
        if x.ndim == len(self.input_shape) + 1:
            x = np.broadcast_to(x[:, None], (x.shape[0], self.timesteps) + self.input_shape)
        return np.ascontiguousarray(x)

    def torch_outputs(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """(n, T, n_out) eager PyTorch outputs, computed in the model's own dtype."""
        dtype = next(model.parameters()).dtype
        seq = torch.from_numpy(self.sequence(x)).to(dtype).transpose(0, 1)  # (T, n, ...)
        _reset(model)
        hooks = _cast_snntorch_spikes(model, dtype)
        with torch.no_grad():
            if self.style == "step":
                outs = [_first(model(seq[t])) for t in range(seq.shape[0])]
                out = torch.stack(outs)
            else:
                out = _first(model(seq))
        for h in hooks:
            h.remove()
        _reset(model)
        return out.transpose(0, 1).reshape(x.shape[0], seq.shape[0], -1).double().numpy()

    def graph(self):
        from snncompile.frontend import from_torch
        return from_torch(self.build(), self.input_shape, self.timesteps, name=self.name)


def _cast_snntorch_spikes(model: nn.Module, dtype: torch.dtype) -> list:
    """snnTorch's Heaviside always returns float32 spikes, so a float64 model would fail at
    the next layer; cast them (0/1, exact) to the model's dtype. Membranes stay float64. An
    ``init_hidden=True`` RLeaky/RSynaptic also keeps its spikes (``spk``) for its recurrent layer."""
    def cast(module, args, out):
        if isinstance(getattr(module, "spk", None), torch.Tensor):
            module.spk = module.spk.to(dtype)
        if isinstance(out, tuple):
            return (out[0].to(dtype),) + out[1:]
        return out.to(dtype)

    return [m.register_forward_hook(cast) for m in model.modules() if isinstance(m, snn.SpikingNeuron)]


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _reset(model: nn.Module) -> None:
    from snncompile.frontend.tracing import reset_state
    reset_state(model)


_SHAPE = (2, 8, 8)
MODELS: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("sj_mlp", lambda T: sj_mlp(), _SHAPE, 6, "step", "spikes", 8.0,
             "SpikingJelly MLP, LIF decay_input=True, Dropout"),
    ZooModel("sj_conv_maxpool", lambda T: sj_conv_maxpool(), _SHAPE, 5, "step", "static", 2.0,
             "conv+BN+IF, MaxPool, bare Linear readout (potential)"),
    ZooModel("sj_if_soft", lambda T: sj_if_soft_avgpool(), _SHAPE, 6, "step", "spikes", 4.0,
             "soft-reset IF, AvgPool2d, Identity"),
    ZooModel("sj_lif_vreset", lambda T: sj_lif_hard_vreset(), _SHAPE, 6, "step", "spikes", 6.0,
             "LIF hard reset v_reset != 0, decay_input=False; BatchNorm1d; ParametricLIF"),
    ZooModel("sj_sew", lambda T: SEWNet(), _SHAPE, 5, "step", "spikes", 3.0,
             "SEW-ResNet block (ADD of spikes), soft-reset IF"),
    ZooModel("sj_ms", lambda T: MSNet(), _SHAPE, 5, "step", "static", 6.0,
             "MS-ResNet block (membrane shortcut: ADD of currents), LIF decay_input"),
    ZooModel("sj_plif_multistep", lambda T: sj_plif_multistep(), _SHAPE, 6, "multistep", "spikes", 6.0,
             "multi-step SpikingJelly: SeqToANNContainer, ParametricLIF, layer.* wrappers"),
    ZooModel("snntorch_loop", SnnTorchLoop, _SHAPE, 6, "loop", "spikes", 3.0,
             "snnTorch tutorial loop, Leaky subtract/zero/none with reset_delay=True"),
    ZooModel("snntorch_synaptic", SnnTorchSynapticLoop, _SHAPE, 6, "loop", "spikes", 3.0,
             "snnTorch Synaptic, reset_delay=False zero resets"),
    ZooModel("snntorch_step", lambda T: snntorch_step(), _SHAPE, 6, "step", "spikes", 4.0,
             "snnTorch init_hidden=True (one call per step), conv + AvgPool, zero reset with reset_delay=False"),
    ZooModel("norse_loop", NorseLoop, _SHAPE, 6, "loop", "spikes", 6.0,
             "Norse LIFCell (v_leak, v_reset != 0) and LIFBoxCell"),
]}
