"""Example 4: a residual SNN (SEW-ResNet-style spike ADD blocks) on MNIST, deployed.

Shows a network that is not a chain: each SEW block (Fang et al., NeurIPS 2021) adds the
spikes of its second IF neuron to the spikes that entered the block (``out + x``, values
0/1/2), which a strictly sequential exporter such as lava-dl netx cannot express. Trained
with SpikingJelly (ATan surrogate, T = 4, Adam, cosine schedule), then the snncompile
pipeline on the 1,000 held-out digits: export -> quantize -> emulator (float, fixed) ->
Lava (a subset) -> energy report (the ADD's 2s are counted as two accumulates).

Note: the model classes live in this script, so loading ``model.pt`` back needs
``--trust-code`` and this folder on the path:
``PYTHONPATH=examples snncompile export examples/out/ex4_sew_resnet/model.pt --input-shape 1,28,28 --timesteps 4 --trust-code``.

    python examples/ex4_sew_resnet.py          # full: a few minutes on 2 cores
    python examples/ex4_sew_resnet.py --fast   # seconds, for the tests
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (accuracy, example_parser, load_mnist, output_dir, seed_everything,  # noqa: E402
                    subset, train)

from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402

T = 4
SEED = 0
EPOCHS = 8
LR = 5e-3


def spiking(c: int) -> list[nn.Module]:
    """BatchNorm + IF neuron (hard reset to 0, ATan surrogate)."""
    return [nn.BatchNorm2d(c), neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True)]


class SEWBlock(nn.Module):
    """conv-BN-IF, conv-BN-IF, then ADD of the block's input spikes (SEW 'ADD' connect)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), *spiking(c),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), *spiking(c))

    def forward(self, x):
        return self.body(x) + x


class SEWNet(nn.Module):
    """stem (28x28x16) -> pool -> SEW block (14x14) -> pool -> SEW block (7x7) -> Linear head."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), *spiking(c))
        self.pool1 = nn.MaxPool2d(2)
        self.block1 = SEWBlock(c)
        self.pool2 = nn.MaxPool2d(2)
        self.block2 = SEWBlock(c)
        self.fc = nn.Linear(c * 7 * 7, 10)

    def forward(self, x):
        x = self.pool1(self.stem(x))
        x = self.pool2(self.block1(x))
        return self.fc(torch.flatten(self.block2(x), 1))


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean of the head's output over T single steps of the same image."""
    out = sum(model(images) for _ in range(T)) / T
    functional.reset_net(model)
    return out


def main(fast: bool = False, out=None, n_lava: int = 100, seed: int = SEED):
    seed_everything(seed)
    data = load_mnist()
    if fast:
        data = subset(data, 300, 60)
    model = SEWNet()
    train(model, data.x_train, data.y_train, forward, epochs=1 if fast else EPOCHS, lr=LR,
          desc="SEW-ResNet", seed=seed)
    acc = accuracy(model, data.x_test, data.y_test, forward)
    print(f"PyTorch test accuracy: {100 * acc:.1f} % on {len(data.x_test)} digits")
    folder = output_dir("ex4_sew_resnet", out)
    torch.save(model, folder / "model.pt")

    from snncompile.pipeline import deploy
    result = deploy(model, "mnist_sew_resnet", (1, 28, 28), T, data.x_test, data.y_test, folder,
                    x_calib=data.x_train[:200], n_lava=6 if fast else n_lava, torch_accuracy=acc)
    print(result.table())
    return result


if __name__ == "__main__":
    parser = example_parser(__doc__, "ex4_sew_resnet")
    args = parser.parse_args()
    # Run through the module's importable name, so model.pt pickles the classes as
    # 'ex4_sew_resnet.<Class>' (not '__main__.<Class>', which no other process can import).
    import ex4_sew_resnet
    ex4_sew_resnet.main(fast=args.fast, out=args.out, n_lava=args.lava)
