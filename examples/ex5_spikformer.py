"""Example 5: a tiny Spikformer (spiking transformer, T = 4) trained on MNIST, deployed.

Written in the style of the official Spikformer (Zhou et al., ICLR 2023, ZK-Zhou/spikformer
``cifar10/model.py``), with the official module and attribute names, op order and neuron
settings, for 1x28x28 digits and small dimensions:

- SPS, the spiking patch stem: four conv-BN-LIF stages, 3x3 max pooling (stride 2) on the
  spikes after the last two (28x28 -> 7x7 = 49 tokens), then a relative position embedding
  (conv-BN-LIF) added to its input spikes (``x + x_feat``);
- blocks of spiking self-attention (SSA) and an MLP, each with a spike residual add: q, k, v
  are Linear + BatchNorm1d on the tokens + LIF, ``attn = (q @ k^T) * 0.125``, ``x = attn @ v``
  (no softmax: spikes times spikes), an attention LIF of threshold 0.5, a Linear-BN-LIF
  projection;
- the mean over the tokens, then over time, into a Linear head.

Multi-step LIF neurons (SpikingJelly 2.0, ``tau = 2``, hard reset to 0, sigmoid surrogate,
pure-PyTorch multi-step on the CPU), trained with Adam and a cosine schedule on the 4,000
training digits. The snncompile pipeline then runs on the 1,000 held-out digits: export ->
quantize (8-bit) -> emulator (float, fixed) -> energy report. Trained on one torch thread:
95.3 % float, 96.0 % in 8-bit fixed point, 1.53 M synaptic operations and 1.9 uJ a digit
(benchmarks/RESULTS.md; another thread count trains a slightly different model).
Lava runs it too (issue 12): the attention products as our own Product processes, the token
layouts as re-indexed ports, bit-exact with the emulator in fixed point on the first
``--lava`` digits (benchmarks/RESULTS.md: 50 digits, per-digit Lava time, process counts).

Note: the model classes live in this script, so loading ``model.pt`` back needs
``--trust-code`` and this folder on the path:
``PYTHONPATH=examples snncompile export examples/out/ex5_spikformer/model.pt --input-shape 1,28,28 --timesteps 4 --trust-code``.

    python examples/ex5_spikformer.py          # full: 6-8 minutes on 2 loaded cores
    OMP_NUM_THREADS=1 python examples/ex5_spikformer.py   # faster on a loaded machine (tiny ops)
    python examples/ex5_spikformer.py --fast   # seconds, for the tests
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (INPUT_SHAPE, accuracy, example_parser, load_mnist, output_dir,  # noqa: E402
                    seed_everything, subset, train)

from spikingjelly.activation_based import functional, neuron  # noqa: E402

T = 4
SEED = 0
EPOCHS = 12
LR = 2e-3
EMBED_DIM = 32
NUM_HEADS = 2
MLP_RATIO = 4
DEPTHS = 1
#: fast mode: one epoch in small batches, enough steps for the BatchNorm running statistics
#: to settle (after 300 digits in batches of 64 every layer is silent in eval mode)
FAST_TRAIN = 1000
FAST_BATCH = 16


def lif(v_threshold: float = 1.0) -> neuron.LIFNode:
    """The official ``MultiStepLIFNode(tau=2.0, detach_reset=True)`` in SpikingJelly 2.0 terms:
    ``v += (x - v) / 2``, spike at ``v >= v_threshold``, hard reset to 0, multi-step."""
    return neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                          detach_reset=True, step_mode="m")


class MLP(nn.Module):
    """Token-wise Linear + BN1d (on the transposed tokens) + LIF, twice."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = lif()
        self.fc2_linear = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = lif()
        self.c_hidden = hidden

    def forward(self, x):
        T, B, N, C = x.shape
        x = self.fc1_linear(x.flatten(0, 1))
        x = self.fc1_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, self.c_hidden).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_linear(x.flatten(0, 1))
        x = self.fc2_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        return self.fc2_lif(x)


class SSA(nn.Module):
    """Spiking self-attention: spike q, k, v per head, (q @ k^T) * 0.125 @ v, LIF at 0.5."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.num_heads = num_heads
        self.scale = 0.125
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", lif())
        self.attn_lif = lif(v_threshold=0.5)
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif()

    def _heads(self, x_for_qkv, name, T, B, N, C):
        """Linear -> BN1d on (TB, C, N) -> LIF, then split heads: (T, B, h, N, C/h)."""
        out = getattr(self, f"{name}_linear")(x_for_qkv)
        out = getattr(self, f"{name}_bn")(out.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        out = getattr(self, f"{name}_lif")(out)
        return out.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, N, C = x.shape
        x_for_qkv = x.flatten(0, 1)
        q = self._heads(x_for_qkv, "q", T, B, N, C)
        k = self._heads(x_for_qkv, "k", T, B, N, C)
        v = self._heads(x_for_qkv, "v", T, B, N, C)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = attn @ v
        x = x.transpose(2, 3).reshape(T, B, N, C).contiguous()
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_linear(x).transpose(-1, -2)).transpose(-1, -2)
                             .reshape(T, B, N, C))


class Block(nn.Module):
    """SSA and MLP, each added to its input spikes (the stream then holds 0, 1, 2, ...)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.attn = SSA(dim, num_heads)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return x


class SPS(nn.Module):
    """Spiking patch splitting: conv-BN-LIF x4, max pools after the last two, rpe + x_feat."""

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        chans = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{suffix}", lif())
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.maxpool3 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, stride=1, padding=1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = lif()

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.proj_conv(x.flatten(0, 1))
        x = self.proj_bn(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif(x).flatten(0, 1).contiguous()
        x = self.proj_conv1(x)
        x = self.proj_bn1(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif1(x).flatten(0, 1).contiguous()
        x = self.proj_conv2(x)
        x = self.proj_bn2(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif2(x).flatten(0, 1).contiguous()
        x = self.maxpool2(x)
        x = self.proj_conv3(x)
        x = self.proj_bn3(x).reshape(T, B, -1, H // 2, W // 2).contiguous()
        x = self.proj_lif3(x).flatten(0, 1).contiguous()
        x = self.maxpool3(x)
        x_feat = x.reshape(T, B, -1, H // 4, W // 4).contiguous()
        x = self.rpe_conv(x)
        x = self.rpe_bn(x).reshape(T, B, -1, H // 4, W // 4).contiguous()
        x = self.rpe_lif(x)
        x = x + x_feat
        return x.flatten(-2).transpose(-1, -2)  # (T, B, N, C)


class Spikformer(nn.Module):
    """SPS -> blocks -> mean over tokens -> mean over T -> Linear head; input (B, 1, 28, 28)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, embed_dims: int = EMBED_DIM,
                 num_heads: int = NUM_HEADS, mlp_ratios: int = MLP_RATIO, depths: int = DEPTHS, T: int = T):
        super().__init__()
        self.T = T
        self.patch_embed = SPS(in_channels, embed_dims)
        self.block = nn.ModuleList([Block(embed_dims, num_heads, mlp_ratios) for _ in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes)
        self.apply(_init_linear)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.mean(2)  # mean over the N tokens: (T, B, C)

    def forward(self, x):
        x = (x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)
        x = self.forward_features(x)
        return self.head(x.mean(0))


def _init_linear(m: nn.Module) -> None:
    """The official ``_init_weights``: truncated-normal Linear weights (std 0.02), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's own forward (it repeats the image over T), then a fresh membrane state."""
    out = model(images)
    functional.reset_net(model)
    return out


@torch.no_grad()
def firing_rates(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Fraction of (step, sample, neuron) that spiked, per LIF layer (a silent layer is a bug)."""
    rates, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, neuron.LIFNode):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: rates.__setitem__(name, float(o.float().mean()))))
    model.eval()
    forward(model, images)
    for h in hooks:
        h.remove()
    return rates


def train_spikformer(data, *, fast: bool = False, seed: int = SEED) -> Spikformer:
    """A freshly seeded Spikformer trained on ``data``'s training digits (eval mode)."""
    seed_everything(seed)
    model = Spikformer()
    train(model, data.x_train, data.y_train, forward, epochs=1 if fast else EPOCHS, lr=LR,
          batch_size=FAST_BATCH if fast else 64, desc="Spikformer", seed=seed)
    return model


def main(fast: bool = False, out=None, n_lava: int = 100, seed: int = SEED):
    data = load_mnist()
    if fast:
        data = subset(data, FAST_TRAIN, 60)
    model = train_spikformer(data, fast=fast, seed=seed)
    acc = accuracy(model, data.x_test, data.y_test, forward)
    print(f"PyTorch test accuracy: {100 * acc:.1f} % on {len(data.x_test)} digits")
    rates = firing_rates(model, torch.as_tensor(data.x_test[:50]))
    print("firing rates: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in rates.items()))
    folder = output_dir("ex5_spikformer", out)
    torch.save(model, folder / "model.pt")

    from snncompile.pipeline import deploy
    result = deploy(model, "mnist_spikformer", INPUT_SHAPE, T, data.x_test, data.y_test, folder,
                    x_calib=data.x_train[:200], n_lava=6 if fast else n_lava, torch_accuracy=acc)
    print(result.table())
    return result, rates


if __name__ == "__main__":
    parser = example_parser(__doc__, "ex5_spikformer")
    args = parser.parse_args()
    # Run through the module's importable name, so model.pt pickles the classes as
    # 'ex5_spikformer.<Class>' (not '__main__.<Class>', which no other process can import).
    import ex5_spikformer
    ex5_spikformer.main(fast=args.fast, out=args.out, n_lava=args.lava)
