"""`--ray`: samples sharded over a Ray cluster on this machine with 1 and 2 workers, and a
table on paper for 50,000 ImageNet-size samples on 1, 16 and 128 workers.

* ``run``'s chunks (``RunJob``: emulator, fixed point) of a spike-input conv SNN (1x28x28
  Bernoulli uint8 trains, T=8) through ``cluster.compute_chunks`` -- what ``snncompile run``
  does -- in this process (2 and 1 torch threads) and with ``--ray`` on a local head
  (``cluster.local_head``: 127.0.0.1, ``--num-cpus`` = workers, one thread per task). Timed
  in-process, result by result: steady per-sample cost = (last - first result) / the samples
  after the first wave of chunks; fixed overhead = total - N x steady (connect, ship the
  graph, start the workers). A CLI child's total would mix the two with Python start-up,
  which on this loaded machine varies by seconds. Every Ray result must equal the
  single-process one (the CLI's bytes are checked in tests/test_ray.py).
* The per-sample emulator cost of a SEW-ResNet-18 at 3x224x224 (bench_export's network,
  random weights, T=4, static input, default quantization) on ONE torch thread, as one Ray
  worker runs it, on a few samples; the pickled size of its quantized graph (what ``ray.put``
  ships once).
* On paper: wall time for 50,000 such samples = the measured fixed overhead + the chunks of
  the slowest worker x (chunk x per-sample cost + the measured per-chunk overhead).

    .venv/bin/python benchmarks/bench_ray.py [--samples 12288] [--workers 1,2] [--sew 2] [--write]
"""
from __future__ import annotations

import argparse
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Ray: samples sharded over a local cluster, and 50,000 ImageNet samples on paper (bench_ray.py)"
CHUNK = 256
T_MNIST = 8


def mnist_size_graph():
    """A conv SNN on 1x28x28 spike trains: conv 8@3x3 -> LIF -> sum-pool 2 -> fc 10 -> LIF."""
    from snncompile.ir import Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d
    rng = np.random.default_rng(0)
    g = Graph("conv28", timesteps=T_MNIST)
    g.add(Input("in", shape=(1, 28, 28)))
    g.add(Conv2d("conv", weight=rng.normal(0.15, 0.4, size=(8, 1, 3, 3)).astype(np.float32), padding=1), ["in"])
    g.add(Neuron("lif1", shape=(8, 28, 28), dv=0.2, threshold=1.0, reset_mode="subtract"), ["conv"])
    g.add(SumPool2d("pool", kernel_size=2, stride=2), ["lif1"])
    g.add(Flatten("flat"), ["pool"])
    g.add(Linear("fc", weight=rng.normal(0.0, 0.05, size=(10, 8 * 14 * 14)), bias=np.full(10, 0.02)), ["flat"])
    g.add(Neuron("lif2", shape=(10,), dv=0.1, threshold=1.0, reset_mode="zero"), ["fc"])
    g.add(Output("out"), ["lif2"])
    return g


def timed_chunks(job, source, ranges, address=None) -> tuple[list, float, float]:
    """(results, seconds to the first result, seconds to the last) of ``compute_chunks``."""
    from snncompile.cluster import compute_chunks
    t0 = time.perf_counter()
    it = compute_chunks(job, source, ranges, address)
    results = [next(it)]
    first = time.perf_counter() - t0
    results += list(it)
    return results, first, time.perf_counter() - t0


def shard_costs(work: Path, n: int, workers: list[int]) -> dict:
    """{label: (steady s/sample, fixed overhead s, total s)}: one process on 2 and 1 threads,
    then Ray with each worker count. Steady = (last - first result) / the samples after the
    first wave of chunks (one per worker); overhead = total - n x steady."""
    import torch

    from snncompile.cluster import local_head
    from snncompile.quantize import quantize
    from snncompile.streaming import RunJob, chunk_ranges, open_inputs
    graph = quantize(mnist_size_graph())[0]
    x = (np.random.default_rng(1).random((n, T_MNIST, 1, 28, 28)) < 0.2).astype(np.uint8)
    np.savez(work / "d.npz", x=x)
    source = open_inputs(work / "d.npz")
    job = RunJob(graph, "emulator", "fixed", T_MNIST, "d.npz")
    ranges = chunk_ranges(n, CHUNK)
    out, reference = {}, None

    def record(label, results, first, total, wave):
        per = (total - first) / (n - wave * CHUNK)
        out[label] = (per, total - n * per, total)
        print(f"{label}: {per * 1e6:.0f} us/sample steady, overhead {total - n * per:.2f} s, "
              f"first result {first:.2f} s, total {total:.2f} s", flush=True)

    threads = torch.get_num_threads()
    for label, t in (("local", threads), ("local1", 1)):
        torch.set_num_threads(t)
        job(source, 0, CHUNK)                              # warm-up (kernel cache, tables)
        results, first, total = timed_chunks(job, source, ranges)
        record(label, results, first, total, 1)
        reference = reference or results
    torch.set_num_threads(threads)
    spikes = np.concatenate([r.arrays["spikes"] for r in reference])
    assert 0.02 < spikes.mean() < 0.6, f"output firing rate {spikes.mean():.3f}: pick other weights"
    for w in workers:
        with local_head(num_cpus=w, object_store_bytes=200_000_000) as address:
            results, first, total = timed_chunks(job, source, ranges, address)
        record(f"ray{w}", results, first, total, w)
        assert all(a.lo == b.lo and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
                   for a, b in zip(results, reference)), f"{w} workers: results differ"
    out["rate"] = spikes.mean()
    return out


def sew_cost(samples: int) -> tuple[float, int]:
    """(s/sample of the emulator on one torch thread, pickled bytes of the quantized graph)."""
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_export
    from snncompile.frontend import from_torch
    from snncompile.quantize import quantize
    from snncompile.targets import emulator
    torch.manual_seed(0)
    graph = from_torch(bench_export.SEWResNet18().eval(), bench_export.INPUT_SHAPE, bench_export.T,
                       name="sew_resnet18")
    x = np.random.default_rng(0).random((samples,) + bench_export.INPUT_SHAPE, dtype=np.float32)
    qgraph, _ = quantize(graph, calib=x[:1])
    size = len(pickle.dumps(qgraph, protocol=5))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # what one Ray worker (num_cpus=1) runs on
    try:
        emulator.run(qgraph, x[:1], precision="fixed")     # warm-up
        t0 = time.perf_counter()
        emulator.run(qgraph, x, precision="fixed")
        per = (time.perf_counter() - t0) / samples
    finally:
        torch.set_num_threads(threads)
    print(f"SEW-ResNet-18 3x224x224: {per:.2f} s/sample on 1 thread; graph {size / 1e6:.0f} MB pickled", flush=True)
    return per, size


def paper_rows(per_sample: float, overhead: float, chunk_overhead: float, chunk: int) -> list[str]:
    rows = ["| workers | chunks of the slowest worker | wall time, 50,000 samples |", "|---|---|---|"]
    chunks = -(-50000 // chunk)
    for w in (1, 16, 128):
        mine = -(-chunks // w)
        wall = overhead + mine * (chunk * per_sample + chunk_overhead)
        rows.append(f"| {w} | {mine} | {wall / 3600:.2f} h ({wall:,.0f} s) |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=48 * CHUNK)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--sew", type=int, default=2, help="SEW-ResNet-18 samples timed (0: skip)")
    ap.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        costs = shard_costs(Path(tmp), args.samples, workers)
    lines = [SECTION, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} "
             f"({platform.system().lower()}), 2 shared CPU cores, Ray 2.60.0, by `benchmarks/bench_ray.py`. "
             f"The machine was loaded by other engineers' jobs (load average {load0[0]:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end), so absolute times are pessimistic and noisy.",
             "",
             f"`run`'s chunks (`RunJob`, emulator, fixed point, {CHUNK} samples a chunk) through "
             f"`cluster.compute_chunks`, in this process or with `--ray` on a local head, on {args.samples:,} "
             f"samples of a spike-input conv SNN (1x28x28 uint8 trains, T={T_MNIST}, output firing rate "
             f"{costs['rate']:.0%}). Steady = (last result - first result) / the samples after the first wave "
             f"(one chunk per worker); fixed overhead = total - N x steady (connect, ship the graph, start the "
             f"workers: each imports torch and snncompile). Every Ray result equals the single-process one.",
             "",
             "| run | steady per sample | fixed overhead | total |", "|---|---|---|---|"]
    names = {"local": "single process (2 torch threads)", "local1": "single process (1 torch thread)", **{f"ray{w}": f"--ray, {w} worker(s) x 1 thread"
                                                            for w in workers}}
    for key, label in names.items():
        per, over, total = costs[key]
        lines.append(f"| {label} | {per * 1e6:.0f} us | {over:.1f} s | {total:.2f} s |")
    lines.append("")
    if args.sew:
        per, size = sew_cost(args.sew)
        ray_key = f"ray{max(workers)}"
        over = costs[ray_key][1]
        # per-chunk cost of Ray beyond the engine: (marginal through 1 worker - marginal of one
        # process on 1 thread) x chunk; floored at 0 (noise on a loaded machine)
        w = max(workers)
        chunk_over = max(0.0, (costs["ray1"][0] - costs["local1"][0]) * CHUNK) if "ray1" in costs else 0.0
        sew_chunk = 16
        lines += [f"SEW-ResNet-18 (bench_export.py's, random weights), 3x224x224, T=4, static input, default "
                  f"quantization: the emulator in fixed point costs **{per:.2f} s per sample on one thread** "
                  f"(as one Ray worker runs it; {args.sew} samples after a warm-up); its quantized graph "
                  f"pickles to {size / 1e6:.0f} MB, shipped once per run (`ray.put`).",
                  "",
                  f"On paper, 50,000 such samples in chunks of {sew_chunk}, workers of one CPU each, data on "
                  f"shared storage: wall = overhead ({over:.1f} s, measured above with {w} workers; more "
                  f"workers start in parallel) + chunks of the slowest worker x ({sew_chunk} x {per:.2f} s + "
                  f"{chunk_over:.2f} s Ray overhead per chunk" + (" (measured: 1 worker's steady cost minus one "
                  "process's on 1 thread)" if chunk_over else ": not measurable above the noise here, 1 worker "
                  "was not slower per sample than one process on 1 thread") + "). Reading a 3x224x224 float32 "
                  f"sample (0.6 MB) from shared storage is left out (under 1 % of {per:.1f} s at 100 MB/s).",
                  ""] + paper_rows(per, over, chunk_over, sew_chunk) + [""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
