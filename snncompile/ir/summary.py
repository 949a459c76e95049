"""A readable description of a graph: per node its kind, inputs, shape and key parameters.

``summarize(graph)`` gives plain JSON-able data (what ``snncompile inspect --json``
prints); ``format_summary(summary)`` the aligned text table for people. Kept apart from
the command so reports and examples can reuse it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph


#: graph.meta key prefix under which the NIR importer records a neuron's ``r`` convention.
NIR_R_CONVENTION = "nir.r_convention."


def _num(x) -> Any:
    """A Python number (JSON-able) from a numpy scalar."""
    return np.asarray(x).item()


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def array_summary(a: np.ndarray) -> Any:
    """One value when all elements are equal, else shape/dtype/min/max."""
    a = np.asarray(a)
    if a.size and a.dtype.kind in "biuf" and np.all(a == a.flat[0]):
        return _num(a.flat[0]) if a.ndim == 0 or a.size == 1 else {"value": _num(a.flat[0]), "shape": list(a.shape)}
    out = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size and a.dtype.kind in "biuf":
        out.update(min=_num(a.min()), max=_num(a.max()))
    return out


def _array_text(v) -> str:
    if not isinstance(v, dict):
        return _fmt(v)
    if "value" in v:
        return _fmt(v["value"])
    rng = f"{_fmt(v['min'])}..{_fmt(v['max'])} " if "min" in v else ""
    return f"{rng}{tuple(v['shape'])}"


def _weight(a: np.ndarray | None) -> Any:
    return None if a is None else {"shape": list(a.shape), "dtype": str(a.dtype)}


def _x(values) -> str:
    return "x".join(str(v) for v in values)


def fixed_summary(fixed) -> dict:
    """The ``fixed`` dataclass as {"class", field: value or array summary}."""
    out = {"class": type(fixed).__name__}
    items = ({f.name: getattr(fixed, f.name) for f in dataclasses.fields(fixed)}
             if dataclasses.is_dataclass(fixed) else {"value": repr(fixed)})
    for key, val in items.items():
        if isinstance(val, (np.ndarray, np.generic)):
            out[key] = array_summary(val)
        elif val is None or isinstance(val, (bool, int, float, str)):
            out[key] = val
        else:
            out[key] = repr(val)
    return out


def _neuron_params(node: ir.Neuron) -> dict:
    params = {k: array_summary(getattr(node, k)) for k in
              ("du", "dv", "threshold", "bias", "reset_value", "reset_amount", "u_init", "v_init")}
    params.update(reset_mode=node.reset_mode, compare=node.compare, source=node.source)
    return params


def _neuron_text(node: ir.Neuron, p: dict) -> str:
    parts = [f"du {_array_text(p['du'])}", f"dv {_array_text(p['dv'])}",
             f"thr {node.compare} {_array_text(p['threshold'])}"]
    if node.reset_mode == "zero":
        parts.append(f"reset to {_array_text(p['reset_value'])}")
    elif node.reset_mode == "subtract":
        same = np.array_equal(node.reset_amount, node.threshold)
        parts.append("reset -= thr" if same else f"reset -= {_array_text(p['reset_amount'])}")
    else:
        parts.append("no reset")
    for key in ("bias", "u_init", "v_init"):
        if np.any(getattr(node, key) != 0):
            parts.append(f"{key} {_array_text(p[key])}")
    if node.source:
        parts.append(f"[{node.source}]")
    return ", ".join(parts)


def _product_text(node, a: tuple, b: tuple) -> str:
    """``spike x spike (h=2, 16x8 @ 8x16)`` for a MatMul, ``spike x spike, AND (2x16x8 * 2x1x8)`` for a Mul."""
    kinds = f"{node.lhs} x {node.rhs}"
    if isinstance(node, ir.MatMul):
        heads = f"h={_x(a[:-2])}, " if len(a) > 2 else ""
        return f"{kinds} ({heads}{_x(a[-2:])} @ {_x(b[-2:])})"
    mask = ", AND" if (node.lhs, node.rhs) == ("spike", "spike") else ""
    return f"{kinds}{mask} ({_x(a)} * {_x(b)})"


def _transformer_params(node: ir.Node, in_shapes: list[tuple]) -> tuple[dict, str]:
    """The spiking-transformer kinds: layouts, products, reductions and constant scales."""
    if isinstance(node, ir.Reshape):
        return {"shape": list(node.shape)}, f"reshape {_x(in_shapes[0])} -> {_x(node.shape)}"
    if isinstance(node, ir.Permute):
        return {"perm": list(node.perm)}, f"perm {node.perm}"
    if isinstance(node, ir.Slice):
        size = in_shapes[0][node.axis]
        return ({"axis": node.axis, "start": node.start, "stop": node.stop},
                f"axis {node.axis} [{node.start}:{node.stop}] of {size}")
    if isinstance(node, ir.PRODUCTS):
        return {"lhs": node.lhs, "rhs": node.rhs}, _product_text(node, *in_shapes)
    if isinstance(node, ir.ReduceSum):
        return ({"axis": node.axis, "keepdim": node.keepdim},
                f"sum over axis {node.axis}" + (", keepdim" if node.keepdim else ""))
    p = {"weight": array_summary(node.weight), "bias": None if node.bias is None else array_summary(node.bias)}
    return p, f"x {_array_text(p['weight'])}" + (f" + {_array_text(p['bias'])}" if node.bias is not None else "")


_TRANSFORMER_KINDS = (ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale)


def _params(node: ir.Node, graph: Graph) -> tuple[dict, str]:
    """Structured parameters and their one-line text."""
    if isinstance(node, _TRANSFORMER_KINDS):
        return _transformer_params(node, [tuple(graph.shape(i)) for i in graph.inputs_of(node.name)])
    if isinstance(node, ir.Input):
        return {}, ""
    if isinstance(node, (ir.Linear, ir.Conv2d)):
        p = {"weight": _weight(node.weight), "bias": _weight(node.bias)}
        text = f"W {_x(node.weight.shape)} {node.weight.dtype}" + (", bias" if node.bias is not None else "")
        if isinstance(node, ir.Conv2d):
            p.update(stride=list(node.stride), padding=list(node.padding), dilation=list(node.dilation),
                     groups=node.groups)
            text += (f", stride {_x(node.stride)}, pad {_x(node.padding)}"
                     + (f", dil {_x(node.dilation)}" if node.dilation != (1, 1) else "")
                     + (f", groups {node.groups}" if node.groups != 1 else ""))
        return p, text
    if isinstance(node, (ir.SumPool2d, ir.AvgPool2d, ir.MaxPool2d)):
        p = {"kernel_size": list(node.kernel_size), "stride": list(node.stride), "padding": list(node.padding)}
        return p, f"kernel {_x(node.kernel_size)}, stride {_x(node.stride)}, pad {_x(node.padding)}"
    if isinstance(node, ir.Neuron):
        p = _neuron_params(node)
        return p, _neuron_text(node, p)
    if isinstance(node, ir.Output):
        return {"mode": node.mode}, f"readout {node.mode}"
    return {}, ""


def _fixed_text(f: dict) -> str:
    fields = ", ".join(f"{k} {_array_text(v)}" for k, v in f.items() if k != "class")
    return f"{f['class']}({fields})"


def summarize(graph: Graph) -> dict:
    """JSON-able description of ``graph`` (shapes are inferred)."""
    graph.infer_shapes()
    nodes, weights, neurons, delayed = [], 0, 0, 0
    for node in graph:
        params, text = _params(node, graph)
        entry = {
            "name": node.name, "kind": node.kind,
            "inputs": [{"name": s, "delay": graph.delay(s, node.name)} for s in graph.inputs_of(node.name)],
            "shape": list(graph.shape(node.name)), "params": params, "text": text,
        }
        convention = graph.meta.get(NIR_R_CONVENTION + node.name)
        if convention is not None:  # how the NIR importer read this neuron's r (see snncompile.interop.nir)
            entry["nir_r_convention"] = convention
            entry["text"] += f", NIR r: {convention}"
        delayed += sum(i["delay"] for i in entry["inputs"])
        fixed = getattr(node, "fixed", None)
        if fixed is not None:
            entry["fixed"] = fixed_summary(fixed)
        if isinstance(node, (ir.Linear, ir.Conv2d, ir.Scale)):
            weights += node.weight.size + (0 if node.bias is None else node.bias.size)
        if isinstance(node, ir.Neuron):
            neurons += int(np.prod(graph.shape(node.name)))
        nodes.append(entry)
    return {
        "name": graph.name, "timesteps": graph.timesteps, "meta": dict(graph.meta),
        "input_shape": list(graph.input.shape), "output_shape": list(graph.shape(graph.output.name)),
        "readout": graph.output.mode, "recurrent_edges": delayed,
        "fixed_point": any("fixed" in n for n in nodes),
        "nodes": nodes,
        "totals": {"nodes": len(nodes), "weights": int(weights), "neurons": neurons},
    }


def format_summary(s: dict) -> str:
    """The summary as an aligned text table with a header and totals."""
    steps = f"T={s['timesteps']}" if s["timesteps"] else "T not set"
    lines = [f"graph '{s['name']}': {steps}, input {tuple(s['input_shape'])}, output {tuple(s['output_shape'])} "
             f"({s['readout']} readout), {s['recurrent_edges']} recurrent edge(s), "
             f"fixed point: {'yes' if s['fixed_point'] else 'no'}"]
    on_rows = {NIR_R_CONVENTION + n["name"] for n in s["nodes"]}
    lines += [f"  meta {k}: {v}" for k, v in sorted(s["meta"].items()) if k not in on_rows]
    header = ("node", "kind", "inputs", "shape", "parameters")
    rows = []
    for n in s["nodes"]:
        ins = ", ".join(i["name"] + (" (t-1)" if i["delay"] else "") for i in n["inputs"])
        rows.append((n["name"], n["kind"], ins, _x(n["shape"]) if n["shape"] else "()", n["text"]))
        if "fixed" in n:
            rows.append(("", "", "", "", "fixed: " + _fixed_text(n["fixed"])))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths) + ("-" * len(header[4]),)] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    t = s["totals"]
    lines.append(f"totals: {t['nodes']} nodes, {t['weights']} weights, {t['neurons']} neurons")
    return "\n".join(line.rstrip() for line in lines)
