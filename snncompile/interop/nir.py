"""NIR <-> IR: ``read_nir(path, dt)`` and ``write_nir(graph, path)``.

Reading flattens the NIR graph (``nir_graph``), discretises its neurons at ``dt``
(``nir_neurons``) and builds IR nodes; writing is in ``nir_write``. What each node became
and which ``r`` convention was assumed is written to ``graph.meta``:

- ``nir.source``: the file; ``nir.dt``: the step used; ``nir.dt_source``: how it was chosen
- ``nir.r_convention.<ir node>``: the ``r`` reading assumed for that neuron
- ``nir.conv1d.<ir node>``: "conv1d as conv2d with unit height" for a mapped Conv1d
- ``nir.input_shape``: the NIR input shape when the IR input differs (Conv1d inputs)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import nir
import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.interop import nir_graph, nir_neurons
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

__all__ = ["read_nir", "write_nir"]


def read_nir(path, dt: Optional[float] = None, timesteps: Optional[int] = None) -> Graph:
    """Import the NIR file ``path`` as an IR graph (float), discretised at step ``dt`` seconds.

    ``dt`` may be left out when the file implies it (``r = tau/dt`` or ``r = 1/dt`` neurons,
    or ``dt`` in the graph metadata) or no node depends on it. ``timesteps`` defaults to the
    graph metadata's ``timesteps`` (written by :func:`write_nir`).
    """
    path = Path(path)
    model = nir_graph.load(path)
    flat = nir_graph.flatten(model, source=f"NIR file '{path}'")
    dt, dt_source = _resolve_dt(flat, dt, model.metadata, path)
    if timesteps is None and "timesteps" in model.metadata:  # written by write_nir
        timesteps = _timesteps(model.metadata["timesteps"], path)
    graph = _Importer(flat, dt, path).build(timesteps)
    graph.meta.update({"nir.source": str(path), "nir.dt": repr(dt), "nir.dt_source": dt_source})
    return graph


def _timesteps(value, path: Path) -> int:
    from snncompile.ir.onnx_format import MAX_TIMESTEPS

    arr = np.asarray(value).reshape(-1)
    if arr.size != 1 or arr.dtype.kind not in "iuf" or not np.isfinite(arr[0]) or arr[0] != int(arr[0]) \
            or not 1 <= int(arr[0]) <= MAX_TIMESTEPS:
        raise SnnCompileError(f"NIR file '{path}': metadata 'timesteps' is {value!r}, expected a whole "
                              f"number of steps from 1 to {MAX_TIMESTEPS:,}")
    return int(arr[0])


def write_nir(graph: Graph, path, dt: float = 1e-4) -> list[str]:
    """Write ``graph`` as a NIR file; returns warnings naming nodes NIR cannot carry exactly."""
    from snncompile.interop.nir_write import to_nir

    nir_model, warnings = to_nir(graph, dt)
    try:
        nir.write(str(path), nir_model)
    except OSError as exc:
        raise SnnCompileError(f"cannot write NIR file '{path}': {exc}") from None
    return warnings


def _resolve_dt(flat: nir_graph.FlatNIR, dt, meta: dict, path: Path) -> tuple[float, str]:
    """(dt, how it was chosen): given, else the file's metadata, else implied by the nodes."""
    found = _file_dt(flat, meta)
    if dt is not None:
        dt = float(dt)
        if not dt > 0 or not np.isfinite(dt):
            raise SnnCompileError(f"--dt must be a positive number of seconds, got {dt}")
        if found and not np.isclose(found[0], dt, rtol=1e-4):
            return dt, f"given (the file suggests dt = {found[0]:g}, {found[1]})"
        return dt, "given"
    if found:
        return found
    if not any(nir_neurons.needs_dt(node) for node in flat.nodes.values()):
        return 1.0, "not needed (no time constants)"
    raise SnnCompileError(
        f"NIR file '{path}': NIR is continuous-time and stores no time step; give one with "
        f"--dt (snnTorch and SpikingJelly export with dt = 1e-4)")


class _Importer:
    """Builds the IR graph node by node, in forward order, from a flattened NIR graph."""

    def __init__(self, flat: nir_graph.FlatNIR, dt: float, path: Path):
        self.flat, self.dt, self.path = flat, dt, path
        self.g = Graph(_graph_name(path))
        #: NIR node name -> IR node name carrying its output value.
        self.out: dict[str, str] = {}
        self.shape: dict[str, tuple] = {}
        self.spiking: dict[str, bool] = {}
        #: (IR neuron, gain) to fold into its input synapses once all edges exist.
        self.gains: list[tuple[str, np.ndarray]] = []
        self.delayed: list[tuple[str, str]] = []

    def fail(self, name: str, why: str) -> SnnCompileError:
        return SnnCompileError(f"NIR file '{self.path}', node '{name}': {why}")

    # -- driver -----------------------------------------------------------------
    def build(self, timesteps) -> Graph:
        self.g.timesteps = timesteps
        for name in self.flat.forward_order():
            node = self.flat.nodes[name]
            if name == self.flat.input:
                self._input(name, node)
            elif name == self.flat.output:
                self._output(name)
            else:
                self._node(name, node)
        for src, dst in self.delayed:
            self.g.add_edge(self.out[src], dst, delay=1)
        for neuron, gain in self.gains:
            _fold_gain(self.g, neuron, gain, self)
        self.g.validate()
        return self.g

    def _feed(self, name: str) -> Optional[str]:
        """One IR node summing all NIR inputs of ``name`` (an Add when there are several)."""
        ins = self.flat.inputs_of(name)
        if not ins:
            raise self.fail(name, "has no input")
        forward = [s for s in ins if (s, name) not in self.flat.back_edges]
        back = [s for s in ins if (s, name) in self.flat.back_edges]
        if len(ins) == 1 and forward:
            return self.out[forward[0]]
        if not forward:
            raise self.fail(name, "is fed only through a recurrent edge")
        add = self._add(ir.Add(f"{name}.sum"), [self.out[s] for s in forward], self.shape[forward[0]])
        if len(forward) > 1 and len({self.shape[s] for s in forward}) > 1:
            raise self.fail(name, f"sums inputs of different shapes {[self.shape[s] for s in forward]}")
        self.delayed += [(s, add) for s in back]
        return add

    def _add(self, node: ir.Node, inputs: list[str], shape: tuple) -> str:
        self.g.add(node, inputs)
        self.shape[node.name] = tuple(shape)
        return node.name

    def _set(self, nir_name: str, ir_name: str, spiking: bool) -> None:
        self.out[nir_name] = ir_name
        self.shape[nir_name] = self.shape[ir_name]
        self.spiking[nir_name] = spiking

    # -- node kinds ---------------------------------------------------------------
    def _input(self, name, node: nir.Input):
        raw = np.asarray(node.input_type["input"]).reshape(-1)
        if raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) \
                or np.any(raw < 1) or np.any(raw > 2 ** 31):
            raise self.fail(name, f"input shape {raw.tolist()} must be positive whole sizes")
        shape = tuple(int(s) for s in raw)
        if not shape:
            raise self.fail(name, "input has no shape")
        if len(shape) == 2:  # (C, L) for Conv1d: IR images are (C, 1, L)
            self.g.meta["nir.input_shape"] = ",".join(map(str, shape))
            shape = (shape[0], 1, shape[1])
        self._add(ir.Input(name, shape=shape), [], shape)
        self._set(name, name, spiking=True)

    def _output(self, name):
        src = self._feed(name)
        mode = "spikes" if all(self.spiking.get(p, False) for p in self.flat.inputs_of(name)) else "potential"
        self._add(ir.Output(name, mode=mode), [src], self.shape[src])

    def _node(self, name, node):
        src = self._feed(name)
        in_shape = self.shape[src]
        try:
            if isinstance(node, nir_neurons.NEURONS):
                return self._neuron(name, node, src, in_shape)
            ir_node, spiking = self._synapse(name, node, in_shape), self._spiking_source(name)
        except SnnCompileError:
            raise
        except (ValueError, TypeError, IndexError) as exc:
            raise self.fail(name, f"{type(node).__name__} parameters do not fit: {exc}") from None
        if ir_node is None:  # identity-like (flatten of a flat vector)
            self.out[name], self.shape[name], self.spiking[name] = src, in_shape, spiking
            return
        shape = ir_node.out_shape([in_shape])
        self._add(ir_node, [src], shape)
        self._set(name, ir_node.name, spiking)

    def _spiking_source(self, name) -> bool:
        """Flatten keeps spikes spikes; every other synapse makes a current."""
        node = self.flat.nodes[name]
        return isinstance(node, nir.Flatten) and all(self.spiking[p] for p in self.flat.inputs_of(name)
                                                     if p in self.spiking)

    def _synapse(self, name, node, in_shape) -> Optional[ir.Node]:
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = _f(node.weight)
            if w.ndim != 2:
                raise self.fail(name, f"weight must be 2-D, has shape {w.shape}")
            if len(in_shape) != 1 or in_shape[0] != w.shape[1]:
                raise self.fail(name, f"weight {w.shape} does not fit its input of shape {in_shape}")
            bias = _f(node.bias).reshape(-1) if isinstance(node, nir.Affine) else None
            if bias is not None and bias.shape != (w.shape[0],):
                raise self.fail(name, f"bias of shape {bias.shape} for {w.shape[0]} outputs")
            return ir.Linear(name, weight=w, bias=bias)
        if isinstance(node, nir.Scale):
            return _gain_node(name, _f(node.scale), in_shape, self)
        if isinstance(node, nir.Conv2d):
            return self._conv(name, _f(node.weight), node, in_shape, one_d=False)
        if isinstance(node, nir.Conv1d):
            self.g.meta[f"nir.conv1d.{name}"] = "Conv1d as Conv2d with unit height"
            return self._conv(name, _f(node.weight)[:, :, None, :], node, in_shape, one_d=True)
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            cls = ir.SumPool2d if isinstance(node, nir.SumPool2d) else ir.AvgPool2d
            return cls(name, kernel_size=_pair(node.kernel_size), stride=_pair(node.stride),
                       padding=_pair(node.padding))
        if isinstance(node, nir.Flatten):
            ndim = len(in_shape)
            start, end = node.start_dim % max(ndim, 1), node.end_dim % max(ndim, 1)
            if ndim == 1:
                return None
            if not (start == 0 and end == ndim - 1):
                raise self.fail(name, f"Flatten of dims {node.start_dim}..{node.end_dim} of a "
                                      f"{ndim}-D input: the IR flattens whole samples only")
            return ir.Flatten(name)
        raise self.fail(name, f"NIR node type {type(node).__name__} is not supported (supported: "
                              f"Input, Output, Affine, Linear, Scale, Conv1d, Conv2d, SumPool2d, "
                              f"AvgPool2d, Flatten, IF, LIF, LI, CubaLIF, CubaLI, I, Threshold, subgraphs)")

    def _conv(self, name, weight, node, in_shape, one_d: bool) -> ir.Conv2d:
        if len(in_shape) != 3:
            raise self.fail(name, f"convolution needs a (C, H, W) input, got {in_shape}")
        stride, dilation = _nd(node.stride, one_d), _nd(node.dilation, one_d)
        padding = _conv_padding(name, node.padding, weight.shape[2:], dilation, stride, one_d, self)
        bias = _f(node.bias).reshape(-1)
        if bias.size == 1 and weight.shape[0] > 1 and not np.any(bias):
            bias = np.zeros(weight.shape[0])
        return ir.Conv2d(name, weight=weight, bias=bias, stride=stride, padding=padding,
                         dilation=dilation, groups=int(node.groups))

    def _neuron(self, name, node, src, in_shape):
        dyn = nir_neurons.dynamics(node, name, self.dt)
        shape = tuple(in_shape)
        fit = lambda a: _fit(a, shape, name, self)  # noqa: E731
        self.g.meta[f"nir.r_convention.{name}"] = dyn.convention
        if isinstance(node, nir_neurons.FILTERS):
            return self._filter(name, node, dyn, src, shape, fit)
        neuron = ir.Neuron(name, shape=shape, du=fit(dyn.du), dv=fit(dyn.dv),
                           threshold=fit(dyn.threshold), bias=fit(dyn.bias), reset_mode="zero",
                           reset_value=fit(dyn.reset_value), compare=">", v_init=fit(dyn.v_init),
                           source=f"nir.{type(node).__name__}")
        if isinstance(node, nir.Threshold):
            neuron.reset_mode = "none"
        self._add(neuron, [src], shape)
        self._set(name, name, spiking=True)
        if not np.all(dyn.gain == 1.0):
            self.gains.append((name, fit(dyn.gain)))

    def _filter(self, name, node, dyn, src, shape, fit):
        """LI / CubaLI / I: non-spiking (leaky) integrators, built as Add nodes with a decaying
        recurrent edge (``v[t] = keep * v[t-1] + gain * x[t] + bias``); output is v."""
        if isinstance(node, nir.CubaLI):
            src = self._leaky(f"{name}.current", src, shape, fit(dyn.current_gain), fit(1 - dyn.du), 0.0)
        out = self._leaky(name, src, shape, fit(dyn.gain), fit(1 - dyn.dv), fit(dyn.bias))
        self._set(name, out, spiking=False)

    def _leaky(self, name, src, shape, gain, keep, bias) -> str:
        gain_in = _gain_node(f"{name}.in", gain, shape, self, bias=bias)
        self._add(gain_in, [src], shape)
        self._add(ir.Add(name), [gain_in.name], shape)
        leak = _gain_node(f"{name}.leak", keep, shape, self)
        self._add(leak, [name], shape)
        self.g.add_edge(leak.name, name, delay=1)
        return name


# -- helpers ---------------------------------------------------------------------------
def _f(a) -> np.ndarray:
    return np.array(a, dtype=np.float64)


def _pair(v) -> tuple[int, int]:
    v = np.asarray(v).reshape(-1)
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _nd(v, one_d: bool) -> tuple[int, int]:
    """A 1-D conv's scalar/1-tuple parameter as (1, v) over (unit H, W); 2-D as a pair."""
    if one_d:
        return (1, int(np.asarray(v).reshape(-1)[0]))
    return _pair(v)


def _conv_padding(name, padding, kernel, dilation, stride, one_d, imp) -> tuple[int, int]:
    if isinstance(padding, (bytes, np.bytes_)):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise imp.fail(name, "padding='same' needs stride 1")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            if any(t % 2 for t in total):
                raise imp.fail(name, f"padding='same' with an even kernel {tuple(kernel)} pads "
                                     f"asymmetrically; the IR pads both sides equally")
            return (total[0] // 2, total[1] // 2)
        raise imp.fail(name, f"unknown padding {padding!r}")
    if one_d:
        return (0, int(np.asarray(padding).reshape(-1)[0]))
    return _pair(padding)


def _fit(a, shape, name, imp) -> np.ndarray:
    """A NIR parameter array in the IR population shape (Conv1d's (C, L) -> (C, 1, L))."""
    a = _f(a)
    if a.shape == tuple(shape) or a.ndim == 0:
        return a
    if a.size == 1:
        return a.reshape(())
    if a.size == int(np.prod(shape)):
        return a.reshape(shape)
    try:
        return np.broadcast_to(a, shape).copy()
    except ValueError:
        raise imp.fail(name, f"parameters of shape {a.shape} do not fit the input of shape "
                             f"{tuple(shape)}") from None


def _gain_node(name, gain, shape, imp, bias=0.0) -> ir.Node:
    """An elementwise ``x * gain + bias`` as a diagonal Linear (vectors) or a depthwise 1x1
    Conv2d (images, per-channel values only): the IR has no elementwise scale node."""
    gain, bias = np.broadcast_to(_f(gain), shape), np.broadcast_to(_f(bias), shape)
    if len(shape) == 1:
        return ir.Linear(name, weight=np.diag(gain), bias=np.array(bias) if np.any(bias) else None)
    if len(shape) == 3:
        g_c, b_c = gain[:, 0, 0], bias[:, 0, 0]
        if not (np.all(gain == g_c[:, None, None]) and np.all(bias == b_c[:, None, None])):
            raise imp.fail(name, f"per-pixel scale or neuron parameters over an image of shape "
                                 f"{tuple(shape)}: only per-channel values can be mapped")
        return ir.Conv2d(name, weight=g_c.reshape(-1, 1, 1, 1).copy(),
                         bias=b_c.copy() if np.any(b_c) else None, groups=shape[0])
    raise imp.fail(name, f"cannot scale a {len(shape)}-D tensor of shape {tuple(shape)}")


def _fold_gain(g: Graph, neuron: str, gain: np.ndarray, imp) -> None:
    """Multiply the input of ``neuron`` by ``gain``: into the synapse(s) feeding it when they
    feed nothing else, otherwise through an inserted gain node."""
    _scale_edge(g, g.inputs_of(neuron)[0], neuron, gain, imp)


def _scale_edge(g: Graph, src: str, dst: str, gain, imp) -> None:
    node = g.node(src)
    shape = g.shape(src)
    sole = g.consumers(src) == [dst]
    if sole and isinstance(node, ir.Linear):
        gv = np.broadcast_to(gain, shape).reshape(-1)
        node.weight = node.weight * gv[:, None]
        node.bias = None if node.bias is None else node.bias * gv
        return
    if sole and isinstance(node, ir.Conv2d):
        gv = np.broadcast_to(gain, shape)
        g_c = gv[:, 0, 0]
        if np.all(gv == g_c[:, None, None]):
            node.weight = node.weight * g_c[:, None, None, None]
            node.bias = None if node.bias is None else node.bias * g_c
            return
    if sole and isinstance(node, ir.Add):
        for operand in g.inputs_of(src):
            _scale_edge(g, operand, src, gain, imp)
        return
    edge = dict(g.nx.edges[src, dst])
    scale = _gain_node(f"{dst}.input_gain" if not g.delay(src, dst) else f"{src}.gain", gain, shape, imp)
    g.nx.remove_edge(src, dst)
    g.add(scale, [src])
    g.nx.add_edge(scale.name, dst, index=edge["index"], delay=edge.get("delay", 0))
    g.infer_shapes()


def _file_dt(flat: nir_graph.FlatNIR, meta: dict) -> Optional[tuple[float, str]]:
    """The step the file states (metadata 'dt') or implies (r = tau/dt, r = 1/dt), if any."""
    if "dt" in meta:
        dt = np.asarray(meta["dt"]).reshape(-1)
        if dt.size != 1 or dt.dtype.kind not in "iuf" or not np.isfinite(dt[0]) or not dt[0] > 0:
            raise SnnCompileError(f"NIR graph metadata 'dt' is {meta['dt']!r}, expected one positive "
                                  f"number of seconds")
        return float(dt[0]), "NIR graph metadata 'dt'"
    implied = {name: nir_neurons.dt_dependence(node) for name, node in flat.nodes.items()}
    implied = {k: v for k, v in implied.items() if v is not None}
    if implied:
        values = np.array(list(implied.values()))
        if np.allclose(values, values[0], rtol=1e-4):
            return float(values[0]), f"implied by r = tau/dt or r = 1/dt of {', '.join(sorted(implied))}"
    return None


def _graph_name(path: Path) -> str:
    return path.stem or "nir"
