"""``snncompile demo``: the whole pipeline on a real trained network and real data.

Uses the conv SNN shipped in ``snncompile/data/mnist_convsnn.pt`` (trained by
``examples/ex1_conv_spikingjelly.py --ship``; its metadata JSON says how) on the 1,000
held-out MNIST digits of ``snncompile.mnist``: PyTorch accuracy, export, quantization,
emulator float and fixed point, Lava on a subset, energy report. Ends with a summary
table and the path of the HTML report.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from snncompile.commands._common import reports_errors
from snncompile.errors import SnnCompileError

DATA = Path(__file__).resolve().parents[1] / "data"
SHIPPED = DATA / "mnist_convsnn.pt"
#: Test digits run on Lava by default: fits the 3-minute budget on 2 cores.
DEFAULT_LAVA_SAMPLES = 500
REGENERATE = "python examples/ex1_conv_spikingjelly.py --ship"


def shipped_metadata(model_path=None) -> dict:
    """The shipped model's JSON: input shape, T, seed, accuracy, how to regenerate it."""
    model_path = Path(model_path or SHIPPED)
    for path in (model_path, model_path.with_suffix(".json")):
        if not path.exists():
            raise SnnCompileError(f"shipped model file '{path}' is missing; regenerate it with {REGENERATE}")
    return json.loads(model_path.with_suffix(".json").read_text())


def torch_accuracy(model, x, y, timesteps: int, batch_size: int = 250) -> float:
    """Accuracy of the PyTorch model itself: T single steps per image, state reset between
    batches (what SpikingJelly's ``functional.reset_net`` does: every module's ``reset()``)."""
    import numpy as np
    import torch

    def reset():
        for m in model.modules():
            if hasattr(m, "reset") and callable(m.reset):
                m.reset()

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i:i + batch_size])
            reset()
            out = sum(model(xb) for _ in range(timesteps))
            correct += int((out.argmax(1).numpy() == np.asarray(y[i:i + batch_size])).sum())
    reset()
    return correct / len(x)


@click.command("demo")
@click.option("--out", "out_dir", default="snncompile-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the graphs and reports.")
@click.option("--lava-samples", default=DEFAULT_LAVA_SAMPLES, show_default=True, type=click.IntRange(0),
              help="Test digits to run on Lava's CPU simulator (0: skip Lava).")
@click.option("--test-samples", default=1000, show_default=True, type=click.IntRange(1, 1000),
              help="Held-out test digits to evaluate.")
@reports_errors
def command(out_dir, lava_samples, test_samples):
    """Run the whole pipeline on the shipped MNIST conv SNN (about 2 minutes on 2 cores)."""
    started = time.perf_counter()
    meta = shipped_metadata(SHIPPED)
    from snncompile.frontend import load_model
    from snncompile.mnist import load_mnist
    from snncompile.pipeline import deploy

    click.echo(f"snncompile demo: {SHIPPED.name} ({meta['example']}, seed {meta['seed']}), "
               f"T = {meta['timesteps']}, on {test_samples} held-out MNIST digits")
    data = load_mnist()
    x_test, y_test = data.x_test[:test_samples], data.y_test[:test_samples]
    model = load_model(SHIPPED)
    acc = torch_accuracy(model, x_test, y_test, meta["timesteps"])
    click.echo(f"PyTorch accuracy: {100 * acc:.1f} %")
    result = deploy(model, "mnist_convsnn", tuple(meta["input_shape"]), meta["timesteps"],
                    x_test, y_test, out_dir, x_calib=data.x_train[:200], n_lava=lava_samples,
                    torch_accuracy=acc, log=click.echo)
    click.echo("")
    click.echo(result.table())
    click.echo(f"\nHTML energy report: {Path(result.files['energy report']).resolve()}")
    click.echo(f"demo took {time.perf_counter() - started:.0f} s")
    if lava_samples and not result.lava_precision:
        raise SnnCompileError("the Lava stage did not run: "
                              + "; ".join(f"{k}: {v}" for k, v in result.missing.items()))
