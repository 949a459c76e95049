"""The tiny MNIST Spikformer of examples/ex5_spikformer.py: accuracy, SOPs, energy and speed.

One run, side by side on the 1,000 held-out test digits:
- float (PyTorch, emulator float) and 8-bit fixed (emulator) accuracy, SOPs and energy per
  sample (``snncompile.pipeline.deploy``, exact convention, horowitz45; Lava skipped here:
  ``benchmarks/bench_lava_transformer.py`` measures ex5 on Lava);
- per-sample time of the emulator in fixed point against the same model in PyTorch eager
  (SpikingJelly multi-step, float, ``no_grad``), on the same ``--threads`` torch threads:
  all digits in batches (best of ``--repeat`` interleaved runs), and one digit at a time;
  the emulator's default engine (events) and its torch engine side by side, whose outputs
  must be identical (asserted, on all digits).

The model is ``examples/out/ex5_spikformer/model.pt`` (run the example first), or, with
``--train``, trained here with the example's settings (about 8 minutes).

    .venv/bin/python benchmarks/ex5_spikformer.py [--threads 1] [--repeat 3] [--write]

``--write`` replaces this script's section at the end of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SECTION = "## Tiny MNIST Spikformer (examples/ex5_spikformer.py): accuracy, SOPs, energy, emulator vs PyTorch eager"


def _example():
    """examples/ex5_spikformer.py under its importable name (model.pt pickles its classes so)."""
    sys.path.insert(0, str(EXAMPLES))
    import ex5_spikformer
    return ex5_spikformer


def _best_interleaved(fns, repeat: int) -> list[float]:
    """Best wall time of each function over ``repeat`` rounds that run them in turn, so a
    load burst on the shared machine hits every side alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(EXAMPLES / "out" / "ex5_spikformer" / "model.pt"))
    ap.add_argument("--train", action="store_true", help="train the model here (the example's settings)")
    # one thread: this model's ops are tiny; on the loaded 2-core machine a second thread made
    # PyTorch eager ~3.7x slower (23 ms vs 6.3 ms a digit, batches of 250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--single", type=int, default=20, help="digits timed one at a time")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)

    ex = _example()
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.pipeline import deploy
    from snncompile.targets import emulator

    data = ex.load_mnist()
    if args.train:
        model = ex.train_spikformer(data)
    else:
        model = torch.load(args.model, weights_only=False)
    model.eval()
    torch.set_num_threads(args.threads)
    acc = ex.accuracy(model, data.x_test, data.y_test, ex.forward)
    rates = ex.firing_rates(model, torch.as_tensor(data.x_test[:50]))

    with tempfile.TemporaryDirectory() as tmp:
        result = deploy(model, "mnist_spikformer", ex.INPUT_SHAPE, ex.T, data.x_test, data.y_test, tmp,
                        x_calib=data.x_train[:200], n_lava=0, torch_accuracy=acc)
        qgraph = load_onnx(result.files["fixed-point graph"])
    print(result.table())

    x, n = data.x_test, len(data.x_test)

    @torch.no_grad()
    def eager(images, batch=250):
        for i in range(0, len(images), batch):
            ex.forward(model, torch.as_tensor(images[i:i + batch]))

    def emulate(images, engine="auto"):
        return emulator.run(qgraph, images, precision="fixed", engine=engine)

    eager(x[:50])
    emulate(x[:50])  # warm-up: first-call costs (kernel choice, allocations) out of the figures
    emulate(x[:50], "torch")
    events_out, torch_out = emulate(x, "events").outputs, emulate(x, "torch").outputs
    identical = bool(np.array_equal(events_out, torch_out))
    assert identical, f"{int(np.sum(events_out != torch_out))} integers differ between the emulator's engines"
    engine = "events" if emulator._event_program(qgraph, False, True, "auto") is not None else "torch"
    one = x[:args.single]
    load0 = os.getloadavg()[0]
    t_eager, t_emu, t_torch, s_eager, s_emu = _best_interleaved(
        [lambda: eager(x), lambda: emulate(x), lambda: emulate(x, "torch"),
         lambda: [eager(one[i:i + 1]) for i in range(len(one))],
         lambda: [emulate(one[i:i + 1]) for i in range(len(one))]], args.repeat)

    us = lambda seconds, count: f"{1e6 * seconds / count:,.0f} us"  # noqa: E731
    dims = (f"embed {ex.EMBED_DIM}, {ex.NUM_HEADS} heads, {ex.DEPTHS} block(s), MLP x{ex.MLP_RATIO}, "
            f"49 tokens, T={ex.T}")
    lines = [
        f"Model: {dims}; {sum(p.numel() for p in model.parameters()):,} parameters. "
        f"Firing rates on 50 test digits: {min(rates.values()):.1%} to {max(rates.values()):.1%} per LIF layer.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| accuracy PyTorch (float) | {result.torch_accuracy:.1%} |",
        f"| accuracy emulator float (the graph) | {result.float_accuracy:.1%} |",
        f"| accuracy emulator 8-bit fixed | {result.fixed_accuracy:.1%} "
        f"({100 * (result.fixed_accuracy - result.float_accuracy):+.1f} points vs float) |",
        f"| SOPs per sample ({result.convention}) | {result.synops_per_sample:,.0f} |",
        f"| energy per sample, SNN ({result.energy_model}) | {result.energy_per_sample_j:.3g} J |",
        f"| energy per sample, ANN of the same graph | {result.ann_energy_per_sample_j:.3g} J |",
        "",
        f"Per-sample time, {args.threads} torch thread(s), best of {args.repeat} interleaved runs:",
        "",
        f"| | PyTorch eager (SpikingJelly, float) | emulator fixed ({engine} engine) | eager / emulator "
        f"| emulator fixed, torch engine | eager / torch engine |",
        "|---|---|---|---|---|---|",
        f"| {n} digits, batches (eager 250, emulator default) | {us(t_eager, n)} | {us(t_emu, n)} "
        f"| {t_eager / t_emu:.1f}x | {us(t_torch, n)} | {t_eager / t_torch:.1f}x |",
        f"| {len(one)} digits one at a time | {us(s_eager, len(one))} | {us(s_emu, len(one))} "
        f"| {s_eager / s_emu:.1f}x | | |",
        "",
        f"- target, emulator fixed >= 5x faster than PyTorch eager: batched "
        f"{'met' if t_eager / t_emu >= 5 else 'NOT met'} ({t_eager / t_emu:.1f}x), one digit at a time "
        f"{'met' if s_eager / s_emu >= 5 else 'NOT met'} ({s_eager / s_emu:.1f}x); the emulator runs its "
        f"{engine} engine, whose outputs on the {n} digits are identical to the torch engine's: {identical}",
        f"- 8-bit fixed within 1 point of float: "
        f"{'met' if abs(result.fixed_accuracy - result.float_accuracy) <= 0.01 else 'NOT met'}",
        f"- machine: {platform.machine()}, {os.cpu_count()}-core CPU shared with other jobs "
        f"(load average {load0:.1f} before the timed rounds, {os.getloadavg()[0]:.1f} at the end); "
        f"measured {time.strftime('%Y-%m-%d %H:%M')} UTC",
    ]
    for stage, why in result.missing.items():
        lines.append(f"- {stage} not run: {why}")
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_mnist_quant import write_section
        write_section(SECTION, "\n" + text)


if __name__ == "__main__":
    sys.exit(main())
