"""What the MNIST examples share: data, seeds, a training loop with progress bars, evaluation.

Copy this file with an example to start your own project. The deployment half of each
example (export -> quantize -> emulator -> Lava -> energy) is ``snncompile.pipeline.deploy``.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from snncompile.mnist import INPUT_SHAPE, MnistSplit, load_mnist  # noqa: F401  (re-exported)

#: A forward function: (model, batch of images (B, 1, 28, 28)) -> logits (B, 10).
Forward = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
#: A loss: (logits, labels, images) -> scalar. The images let a distillation loss call its teacher.
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subset(data: MnistSplit, n_train: Optional[int], n_test: Optional[int]) -> MnistSplit:
    """The first digits of each split (the splits are already shuffled); for fast modes."""
    return MnistSplit(data.x_train[:n_train], data.y_train[:n_train],
                      data.x_test[:n_test], data.y_test[:n_test])


def cross_entropy(logits, labels, images):
    return F.cross_entropy(logits, labels)


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, forward: Forward, *,
          epochs: int, lr: float = 1e-3, batch_size: int = 64, loss: Loss = cross_entropy,
          params=None, desc: str = "train", seed: int = 0) -> list[float]:
    """Adam with a cosine learning-rate schedule over all steps; returns the mean loss per epoch.

    ``params`` (default: the model's) lets a loss with its own trainable parts (distillation
    adapters) train them too.
    """
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(list(params) if params is not None else model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    history, started = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total, bar = 0.0, tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}",
                               leave=False, file=sys.stdout, dynamic_ncols=True)
        for i in bar:
            idx = order[i * batch_size:(i + 1) * batch_size]
            value = loss(forward(model, xt[idx]), yt[idx], xt[idx])
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
            total += value.item()
            bar.set_postfix(loss=f"{total / (i + 1):.3f}")
        history.append(total / steps_per_epoch)
    model.eval()
    print(f"{desc}: {epochs} epoch(s) on {len(xt)} digits in {time.perf_counter() - started:.0f} s, "
          f"last epoch's loss {history[-1]:.3f}")
    return history


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, forward: Forward,
             batch_size: int = 250) -> float:
    """Top-1 accuracy of the PyTorch model itself (eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = forward(model, torch.as_tensor(x[i:i + batch_size]))
        correct += int((logits.argmax(1) == torch.as_tensor(y[i:i + batch_size])).sum())
    return correct / len(x)


def output_dir(name: str, out: Optional[str] = None) -> Path:
    """Where an example writes model.pt, graphs and reports (default: examples/out/<name>)."""
    path = Path(out) if out else Path(__file__).resolve().parent / "out" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def example_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The options every example takes (--fast, --out, --lava); an example adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny data, 1 epoch (seconds)")
    parser.add_argument("--out", help=f"output folder (default examples/out/{name})")
    parser.add_argument("--lava", type=int, default=100, help="test digits to run on Lava")
    return parser
