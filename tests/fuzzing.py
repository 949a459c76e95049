"""Random mutations of valid ONNX / NIR / netx files, for tests/test_fuzz_graphs.py and
benchmarks/bench_fuzz.py. Each case mutates one valid file (ONNX re-signed with a
recomputed digest), runs it through the CLI in this process, and classifies the outcome:
``ok`` (exit 0), ``error`` (exit 1 with exactly one ``error:`` line that is not an internal
error) or ``bad`` (anything else: a traceback, an internal error, several lines, exit 0 with
an error line...)."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from snncompile.cli import main

#: Values a mutation puts into a number: the edges a crafted file would try.
NASTY = [0, -1, 1, 2, 7, 8, 255, 256, 4095, 4096, 2 ** 17, 2 ** 24, 2 ** 31, -2 ** 31, 2 ** 40, 2 ** 62,
         0.5, -0.5, 1e9, -1e9, 1e300, float("nan"), float("inf"), float("-inf")]


@dataclass
class Outcome:
    kind: str          # ok | error | bad
    case: str
    detail: str


def classify(res, case: str) -> Outcome:
    lines = res.stderr.strip().splitlines()
    if res.exit_code == 0:
        return Outcome("ok", case, "")
    one_line = len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0]
    if res.exit_code == 1 and one_line and res.exception is None or isinstance(res.exception, SystemExit) and one_line:
        return Outcome("error", case, lines[0])
    return Outcome("bad", case, f"exit {res.exit_code}: {res.stderr.strip()[-300:]} {res.exception!r}")


def nasty_array(rng: np.random.Generator, like: np.ndarray) -> np.ndarray:
    """An array shaped like ``like`` (or not) with nasty values or dtype."""
    choice = rng.integers(6)
    shape = like.shape
    if choice == 0:   # another shape
        shape = tuple(int(s) for s in rng.integers(0, 4, rng.integers(0, 4)))
    value = NASTY[rng.integers(len(NASTY))]
    arr = np.full(shape, value, dtype=np.float64)
    if choice == 1:
        arr = like.astype(np.float64) * value if like.size else arr
    if choice == 2 and np.isfinite(value) and abs(value) < 2 ** 62:
        arr = arr.astype(np.int64)
    if choice == 3 and like.size:
        arr = like.copy().astype(np.float64)
        arr.reshape(-1)[rng.integers(arr.size)] = value
    if choice == 4:
        arr = np.array(value)
    if choice == 5 and np.isfinite(value) and abs(value) < 2 ** 31:
        arr = np.full(shape, value).astype(np.int32)
    return arr


# -- ONNX -----------------------------------------------------------------------------------
def mutate_onnx(model, rng: np.random.Generator) -> str:
    """Apply one random mutation to ``model`` in place; return its description."""
    from onnx import numpy_helper

    kind = rng.integers(5)
    if kind == 0 and len(model.graph.initializer):
        i = int(rng.integers(len(model.graph.initializer)))
        t = model.graph.initializer[i]
        new = nasty_array(rng, numpy_helper.to_array(t))
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(new, t.name))
        return f"initializer {t.name} -> {new.dtype}{new.shape}"
    props = list(model.metadata_props)
    if kind in (1, 2) and props:
        p = props[int(rng.integers(len(props)))]
        if p.key.startswith("snncompile.fixed:") and kind == 1:
            try:
                spec = json.loads(p.value)
            except ValueError:    # an earlier mutation broke it
                spec = None
            fields = spec.get("fields") if isinstance(spec, dict) else None
            if isinstance(fields, dict) and fields:
                key = sorted(fields)[int(rng.integers(len(fields)))]
                fields[key] = [{"value": NASTY[rng.integers(len(NASTY))], "type": "int"},
                               {"value": "abc", "type": "str"}, {"array": "nope"}, [1, 2], None,
                               {"list": [1]}, {"dataclass": "NeuronFixed", "fields": {}}][rng.integers(7)]
                p.value = json.dumps(spec)
                return f"{p.key} field {key}"
        p.value = ["", "[]", "{}", "-1", "1e9", "abc", "\n", "null", p.value[: len(p.value) // 2],
                   "9" * 40, '{"a": ' * 50][rng.integers(11)]
        return f"metadata {p.key}"
    if kind == 3 and len(model.graph.node):
        node = model.graph.node[int(rng.integers(len(model.graph.node)))]
        if node.attribute:
            a = node.attribute[int(rng.integers(len(node.attribute)))]
            if a.ints:
                a.ints[int(rng.integers(len(a.ints)))] = int(rng.choice([0, -1, 2 ** 31 - 1, 5]))
            elif a.type == a.INT:
                a.i = int(rng.choice([0, -1, 2 ** 40, 3]))
            elif a.type == a.STRING:
                a.s = [b"", b"bogus", b"zero", b">=", b"\xff"][rng.integers(5)]
            elif a.type == a.FLOAT:
                a.f = float(rng.choice([0.0, -1.0, np.nan, np.inf]))
            return f"attribute {node.name}.{a.name}"
    if kind == 4 and len(model.graph.node) > 1:
        node = model.graph.node[int(rng.integers(len(model.graph.node)))]
        if node.input:
            j = int(rng.integers(len(node.input)))
            others = [n.output[0] for n in model.graph.node] + [model.graph.input[0].name, "nowhere"]
            node.input[j] = others[int(rng.integers(len(others)))]
            return f"input {node.name}[{j}]"
    model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value = int(rng.choice([0, 1, 7, 10 ** 6]))
    return "graph input shape"


def onnx_case(src: Path, work: Path, data: Path, seed: int, runner: CliRunner) -> list[Outcome]:
    import onnx

    from snncompile.ir.onnx_format import stamp_digest

    rng = np.random.default_rng(seed)
    model = onnx.load(str(src))
    what = "; ".join(mutate_onnx(model, rng) for _ in range(int(rng.integers(1, 3))))
    path = work / f"fuzz{seed}.onnx"
    try:
        onnx.save(stamp_digest(model), str(path))
    except Exception as exc:   # the mutation made an unserialisable model: not a file anyone can hand us
        return [Outcome("ok", f"onnx {seed}: {what}", f"unsavable: {exc}")]
    outs = [classify(runner.invoke(main, ["inspect", str(path)]), f"onnx {seed} inspect: {what}")]
    if outs[0].kind == "ok":
        res = runner.invoke(main, ["run", str(path), "--input", str(data), "--backend", "emulator",
                                   "--precision", "fixed", "-o", str(work / "o.npz")])
        outs.append(classify(res, f"onnx {seed} run: {what}"))
    return outs


# -- NIR and netx (HDF5) ------------------------------------------------------------------------
def mutate_h5(f, rng: np.random.Generator) -> str:
    import h5py

    datasets = []
    f.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
    name = datasets[int(rng.integers(len(datasets)))]
    old = f[name][()]
    del f[name]
    if rng.integers(5) == 0:
        return f"deleted {name}"
    if isinstance(old, (bytes, str)) or getattr(old, "dtype", np.dtype("f")).kind in "SO":
        f[name] = [b"Bogus", b"", b"LIF", b"Affine", b"conv", b"dense", b"flatten", b"pool"][rng.integers(8)]
        return f"{name} -> string"
    f[name] = nasty_array(rng, np.asarray(old))
    return f"{name} -> {f[name].dtype}{f[name].shape}"


def h5_case(src: Path, work: Path, seed: int, runner: CliRunner, suffix: str) -> list[Outcome]:
    import h5py

    rng = np.random.default_rng(seed)
    path = work / f"fuzz{seed}{suffix}"
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        what = "; ".join(mutate_h5(f, rng) for _ in range(int(rng.integers(1, 3))))
    res = runner.invoke(main, ["export", str(path), "-o", str(work / "o.onnx")])
    return [classify(res, f"{suffix} {seed}: {what}")]


def write_netx(path: Path, layers: list) -> Path:
    import h5py

    def put(group, spec):
        for key, value in spec.items():
            if isinstance(value, dict):
                put(group.create_group(key), value)
            else:
                group.create_dataset(key, data=value)
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")
        for i, spec in enumerate(layers):
            put(root.create_group(str(i)), spec)
    return path


def seed_files(work: Path) -> dict[str, Path]:
    """The valid files the mutations start from (a quantized graph, its NIR, a conv netx)."""
    from snncompile.interop.nir import write_nir
    from snncompile.ir import Graph, Input, Linear, Neuron, Output
    from snncompile.ir.onnx_format import save_onnx
    from snncompile.quantize import quantize

    g = Graph("fuzz", timesteps=4)
    g.add(Input("in", shape=(3,)))
    g.add(Linear("fc", weight=np.array([[0.6, 0.3, -0.2], [0.1, 0.5, 0.4]])), ["in"])
    g.add(Neuron("lif", shape=(2,), reset_mode="subtract"), ["fc"])
    g.add(Output("out"), ["lif"])
    qg, _ = quantize(g)
    save_onnx(qg, work / "seed.onnx")
    write_nir(g, work / "seed.nir")
    rng = np.random.default_rng(0)
    cuba = dict(type=b"CUBA", iDecay=1024, vDecay=128, vThMant=1500, refDelay=1, gradedSpike=False)
    write_netx(work / "seed.net", [
        {"type": b"input", "shape": np.array([2, 6, 6])},
        {"type": b"conv", "shape": np.array([3, 4, 4]), "weight": rng.integers(-40, 100, (3, 2, 3, 3, 1)),
         "bias": rng.integers(-5, 10, 3), "stride": np.array([1, 1]), "padding": np.array([0, 0]),
         "dilation": np.array([1, 1]), "groups": 1, "neuron": dict(cuba)},
        {"type": b"flatten"},
        {"type": b"dense", "shape": np.array([5]), "weight": rng.integers(-30, 80, (5, 48)),
         "bias": rng.integers(0, 40, 5), "neuron": dict(cuba)}])
    np.savez(work / "data.npz", x=(rng.random((3, 4, 3)) < 0.5).astype(np.uint8))
    return {"onnx": work / "seed.onnx", "nir": work / "seed.nir", "netx": work / "seed.net",
            "data": work / "data.npz"}


def fuzz(work: Path, n_onnx: int, n_nir: int, n_netx: int, first_seed: int = 0) -> list[Outcome]:
    """Run the given number of mutated cases of each format; every outcome."""
    import warnings

    files = seed_files(work)
    runner = CliRunner()
    outcomes: list[Outcome] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(first_seed, first_seed + n_onnx):
            outcomes += onnx_case(files["onnx"], work, files["data"], seed, runner)
        for seed in range(first_seed, first_seed + n_nir):
            outcomes += h5_case(files["nir"], work, seed, runner, ".nir")
        for seed in range(first_seed, first_seed + n_netx):
            outcomes += h5_case(files["netx"], work, seed, runner, ".net")
    return outcomes
