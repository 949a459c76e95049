"""``snncompile export MODEL --input-shape C,H,W --timesteps T [-o GRAPH.onnx] [--trust-code]``.

Dispatches on file suffixes: a PyTorch model (``torch.save(model)``) goes through the
frontend; ``.nir`` and lava-dl ``.net``/``.h5`` files through the interop readers. With
``--model MODULE:CALLABLE`` the file is a checkpoint (state dict) loaded into the model that
CALLABLE builds (:mod:`snncompile.frontend.checkpoint`). The output is ONNX, or NIR for
``-o X.nir``; by default ``MODEL.onnx`` beside the input.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click

from snncompile.commands._common import atomic_output, check_input_file, reports_errors
from snncompile.errors import SnnCompileError

NIR_SUFFIXES = (".nir",)
NETX_SUFFIXES = (".net", ".h5")


def parse_shape(text: str) -> tuple[int, ...]:
    """'2,8,8' -> (2, 8, 8); a clear error otherwise."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip() != "")
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise SnnCompileError(f"--input-shape {text!r} must be positive integers separated by commas, "
                              f"e.g. 2,8,8 (C,H,W) or 100 (F)")
    return shape


@dataclass
class CodeModel:
    """``--model MODULE:CALLABLE [--model-kwargs JSON] [--key NAME]``: the file is a checkpoint."""

    spec: str
    kwargs_json: Optional[str] = None
    key: Optional[str] = None


def read_model(path: Path, input_shape, timesteps, trust_code: bool, dt, code: Optional[CodeModel] = None):
    """Any supported model file -> canonical IR graph and the caveats to print."""
    suffix = path.suffix.lower()
    if code is not None or suffix not in NIR_SUFFIXES + NETX_SUFFIXES:
        return read_torch_model(path, input_shape, timesteps, trust_code, code)
    if suffix in NIR_SUFFIXES:
        from snncompile.interop.nir import read_nir
        graph = read_nir(path, dt=dt, timesteps=timesteps)
    else:
        from snncompile.interop.netx import read_netx
        graph = read_netx(path, timesteps=timesteps)
    if input_shape is not None and tuple(graph.input.shape) != tuple(input_shape):
        raise SnnCompileError(f"'{path}' has input shape {tuple(graph.input.shape)}, "
                              f"--input-shape says {tuple(input_shape)}")
    return graph, []


def read_torch_model(path: Path, input_shape, timesteps, trust_code: bool, code: Optional[CodeModel]):
    """A whole pickled model, or (with ``code``) a checkpoint loaded into the model its code builds."""
    from snncompile.frontend import from_torch, load_model, mapping_warnings
    if code is not None and path.suffix.lower() in NIR_SUFFIXES + NETX_SUFFIXES:
        raise SnnCompileError(f"--model loads a PyTorch checkpoint; '{path}' is a {path.suffix} file")
    if input_shape is None or timesteps is None:
        raise SnnCompileError(f"exporting the PyTorch model '{path}' needs --input-shape and --timesteps")
    if code is not None:
        from snncompile.frontend.checkpoint import model_from_checkpoint, parse_kwargs
        model = model_from_checkpoint(path, code.spec, parse_kwargs(code.kwargs_json), code.key)
    else:
        model = load_model(path, trust_code=trust_code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = from_torch(model, input_shape, timesteps, name=path.stem)
    graph.meta["source"] = path.name
    return graph, mapping_warnings(graph)


def write_graph(graph, out: Path, dt) -> list[str]:
    with atomic_output(out) as tmp:
        if out.suffix.lower() in NIR_SUFFIXES:
            from snncompile.interop.nir import write_nir
            return list(write_nir(graph, tmp, **({} if dt is None else {"dt": dt})))
        from snncompile.ir.onnx_format import save_onnx
        save_onnx(graph, tmp)
    return []


@click.command("export")
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--input-shape", "input_shape", metavar="C,H,W",
              help="Shape of one sample at one step, e.g. 2,34,34 or 700 (needed for PyTorch models).")
@click.option("--timesteps", "-T", type=int, help="Number of time steps the model runs for.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file: .onnx (default: MODEL.onnx beside MODEL) or .nir.")
@click.option("--trust-code", is_flag=True,
              help="Allow classes outside torch/snnTorch/SpikingJelly/Norse (runs code from the file; "
                   "their module must be importable).")
@click.option("--dt", type=float, help="Time step in seconds for NIR input/output (NIR is continuous time).")
@click.option("--model", "model_spec", metavar="MODULE:CALLABLE",
              help="MODEL is a checkpoint (state dict): build the model by calling CALLABLE (a class or "
                   "factory) from MODULE (dotted name or path to a .py file) and load the weights into it. "
                   "This IMPORTS AND RUNS MODULE's code, like --trust-code.")
@click.option("--model-kwargs", "model_kwargs", metavar="JSON",
              help="Keyword arguments for CALLABLE, a JSON object, e.g. '{\"num_classes\": 10}'.")
@click.option("--key", metavar="NAME",
              help="Checkpoint key holding the state dict (default: the file itself, or 'state_dict', "
                   "'model', 'net', 'model_state_dict').")
@reports_errors
def command(model_file, input_shape, timesteps, output, trust_code, dt, model_spec, model_kwargs, key):
    """Export MODEL (torch.save'd PyTorch SNN, .nir, or lava-dl .net/.h5) to an ONNX (or NIR) graph.

    With --model, MODEL is a checkpoint of weights (read with torch.load(weights_only=True);
    'module.' prefixes of DataParallel/DDP are removed) loaded into the model built by
    MODULE:CALLABLE; missing, unexpected or misshapen parameters are errors.
    """
    path = check_input_file(model_file, "checkpoint" if model_spec else "model")
    if model_spec is None and (model_kwargs is not None or key is not None):
        raise SnnCompileError(f"{'--model-kwargs' if model_kwargs is not None else '--key'} needs --model "
                              f"MODULE:CALLABLE (it applies to checkpoints)")
    code = CodeModel(model_spec, model_kwargs, key) if model_spec else None
    shape = parse_shape(input_shape) if input_shape is not None else None
    if timesteps is not None and timesteps < 1:
        raise SnnCompileError(f"--timesteps must be at least 1, got {timesteps}")
    out = Path(output) if output else path.with_suffix(".onnx")
    if os.path.realpath(out) == os.path.realpath(path):
        raise SnnCompileError(f"output '{out}' would overwrite the input; pass -o")
    graph, notes = read_model(path, shape, timesteps, trust_code, dt, code)
    notes += write_graph(graph, out, dt)
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    n_neurons = sum(1 for n in graph if n.kind == "Neuron")
    click.echo(f"wrote {out}: {len(graph)} nodes ({n_neurons} neuron layers), input {tuple(graph.input.shape)}, "
               f"T={graph.timesteps}, readout {graph.output.mode}")
