"""Example 3: an snnTorch MLP in the tutorial style, trained on MNIST and deployed.

Shows the snnTorch tutorial pattern -- a module whose ``forward`` loops over the time
steps itself, ``snn.Leaky`` neurons carrying ``mem`` from step to step, the static image
presented at every step, the output neurons' spike counts as the prediction
(``SF.ce_rate_loss``-style: cross-entropy on the spike counts) -- and then the snncompile
pipeline on the 1,000 held-out digits: export -> quantize -> emulator (float, fixed) ->
Lava (a subset) -> energy report.

Note: the model class lives in this script, so loading ``model.pt`` back needs
``--trust-code`` and this folder on the path:
``PYTHONPATH=examples snncompile export examples/out/ex3_snntorch_mlp/model.pt --input-shape 1,28,28 --timesteps 8 --trust-code``.

    python examples/ex3_snntorch_mlp.py          # full: well under a minute on 2 cores
    python examples/ex3_snntorch_mlp.py --fast   # seconds, for the tests
"""
from __future__ import annotations

import sys
from pathlib import Path

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (accuracy, example_parser, load_mnist, output_dir, seed_everything,  # noqa: E402
                    subset, train)

T = 8
SEED = 0
EPOCHS = 10
LR = 2e-3


def spike_grad(mem_shift: torch.Tensor) -> torch.Tensor:
    """snnTorch's ATan surrogate as a module-level function: ``surrogate.atan()`` returns a
    closure, which ``torch.save`` of the whole model cannot pickle."""
    return surrogate.ATan.apply(mem_shift, 2.0)


class Net(nn.Module):
    """784 -> 256 Leaky -> 10 Leaky, reset by subtraction (snnTorch's default)."""

    def __init__(self, num_hidden: int = 256, beta: float = 0.9, num_steps: int = T):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(28 * 28, num_hidden)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=spike_grad)
        self.fc2 = nn.Linear(num_hidden, 10)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=spike_grad)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(self.num_steps):
            cur1 = self.fc1(x.flatten(1))
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def forward(model: Net, images: torch.Tensor) -> torch.Tensor:
    """Output spike counts over the T steps: the logits of a rate-coded classifier."""
    spk_rec, _ = model(images)
    return spk_rec.sum(0)


def rate_loss(counts, labels, images):
    return F.cross_entropy(counts, labels)


def main(fast: bool = False, out=None, n_lava: int = 100, seed: int = SEED):
    seed_everything(seed)
    data = load_mnist()
    if fast:
        data = subset(data, 300, 60)
    model = Net()
    train(model, data.x_train, data.y_train, forward, epochs=1 if fast else EPOCHS, lr=LR,
          loss=rate_loss, desc="snnTorch MLP", seed=seed)
    acc = accuracy(model, data.x_test, data.y_test, forward)
    print(f"PyTorch test accuracy: {100 * acc:.1f} % on {len(data.x_test)} digits")
    folder = output_dir("ex3_snntorch_mlp", out)
    torch.save(model, folder / "model.pt")

    from snncompile.pipeline import deploy
    result = deploy(model, "mnist_snntorch_mlp", (1, 28, 28), T, data.x_test, data.y_test, folder,
                    x_calib=data.x_train[:200], n_lava=6 if fast else n_lava, torch_accuracy=acc)
    print(result.table())
    return result


if __name__ == "__main__":
    parser = example_parser(__doc__, "ex3_snntorch_mlp")
    args = parser.parse_args()
    # Run through the module's importable name, so model.pt pickles the classes as
    # 'ex3_snntorch_mlp.<Class>' (not '__main__.<Class>', which no other process can import).
    import ex3_snntorch_mlp
    ex3_snntorch_mlp.main(fast=args.fast, out=args.out, n_lava=args.lava)
