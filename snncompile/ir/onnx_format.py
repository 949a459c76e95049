"""The on-disk format: an IR :class:`Graph` as an ONNX model, and back, losslessly.

What the ONNX graph means: **one time step**. Tensors have a leading batch dimension
``N``; every Neuron keeps its state (u, v) from one step to the next, so running the
model T times, one step of the input each time, is the network in time. This is said in
the model's ``doc_string`` too. Opset 17 of the default domain, ``ai.snncompile`` version 1
(schemas in :mod:`snncompile.ir.onnx_schemas`), IR version 8; every file passes
``onnx.checker.check_model(full_check=True)`` (checked on writing and on reading).

Mapping (one IR node -> one ONNX node whose output tensor is named like the IR node):

==============  ==================================================================
IR node         ONNX
==============  ==================================================================
Input           the graph input, shape (N, *shape), float64
Linear          Gemm(x, W, b) with transB=1 (W: (out, in))
Conv2d          Conv (strides, pads, dilations, group)
AvgPool2d       AveragePool, count_include_pad=1
MaxPool2d       MaxPool
SumPool2d       ai.snncompile::SumPool (no standard op sums a window; a ones-weight
                depthwise Conv could not be told apart from a real Conv on reading)
Flatten         Flatten(axis=1)
Add             Sum (operands in order)
Neuron          ai.snncompile::Neuron(x, du, dv, threshold, bias, reset_value,
                reset_amount, u_init, v_init), attributes reset_mode, compare, shape, source
Output          ai.snncompile::Output (mode), the graph output
Reshape         Reshape(x, shape) with shape = (0, *shape): 0 copies the batch dim
Permute         Transpose, perm = (0, *(p + 1)): the batch axis stays first
Slice           Slice(x, starts, ends, axes) (one axis, step 1)
ReduceSum       ReduceSum(x, axes) with keepdims
MatMul, Mul     MatMul(a, b), Mul(a, b) of two activations; what each operand holds
                (spike/count/real) is model metadata ``snncompile.operands:<node>``
                (the checker refuses extra attributes on standard ops)
Scale           ai.snncompile::Scale(x, weight[, bias]) (a constant one-to-one synapse;
                a standard Mul is always a product of two activations)
==============  ==================================================================

- A per-sample axis ``a`` (Slice, ReduceSum) is ONNX axis ``a + 1``; a negative axis is kept
  (it counts from the end in both). Layout ops never touch the batch axis 0, and reading
  refuses one that does.
- Products: reading refuses a MatMul/Mul without operand metadata, metadata naming no
  product, and operands that disagree with what the graph's producers hold
  (:func:`snncompile.passes.operands.check_operands`); writing refuses such a graph too.

- Parameters are initializers named ``<node>::<field>`` holding the array's raw bytes in
  its own dtype (bit-identical). Activations are float64; a parameter stored in another
  dtype is fed through a ``Cast(to=DOUBLE)`` node, which the reader looks through.
- Recurrent edges (``delay=1``): the consumer reads ``<source>::prev``, the output of an
  ``ai.snncompile::Delay(source=<source>)`` node with no inputs, so ONNX stays a DAG.
- Graph name, time steps, ``graph.meta`` (JSON) and the format version are model
  ``metadata_props``. A node's ``fixed`` dataclass (set by quantization) is stored
  generically: model metadata ``snncompile.fixed:<node>`` holds JSON with the class name
  and its fields; array fields are initializers ``<node>::fixed.<path>`` that no op
  consumes. Reading looks the class up in :mod:`snncompile.ir.fixed` only (no other
  import is ever driven by a file).
- Integrity: metadata ``snncompile.sha256`` is the SHA-256 of the serialized graph and the
  other metadata (:func:`content_digest`). Reading refuses a file whose content does not
  match it, so a damaged file (a flipped weight byte parses fine as protobuf) is reported,
  never run. Tools that edit a model on purpose re-sign it with :func:`stamp_digest`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.ir.kinds import StageTable
from snncompile.ir.onnx_schemas import DOMAIN, NEURON_PARAMS, VERSION, register
from snncompile.passes.operands import check_operands

FORMAT_VERSION = "1"
OPSET = 17
IR_VERSION = 8
PRODUCER = "snncompile"
_META_PREFIX = "snncompile."
_FIXED_PREFIX = "snncompile.fixed:"
_OPERANDS_PREFIX = "snncompile.operands:"
_DIGEST = "snncompile.sha256"

DOC = (
    "snncompile spiking network, per-step form. This ONNX graph is ONE time step of the "
    "network, with a leading batch dimension N. ai.snncompile::Neuron ops are stateful: "
    "their state (u, v) carries over from one step to the next, starting from u_init/v_init. "
    "Run it T times (metadata 'snncompile.timesteps'), feeding step t of the input each time. "
    "ai.snncompile::Delay reads a tensor's value of the previous step (zeros at step 0): the "
    "recurrent edges. Synapses are standard ONNX ops; read with snncompile.ir.onnx_format.load_onnx."
)

_ATTRIBUTE_FIELDS = {  # IR attribute fields each kind writes (guards against new, unsaved fields)
    "Input": {"shape"}, "Linear": set(), "Conv2d": {"stride", "padding", "dilation", "groups"},
    "SumPool2d": {"kernel_size", "stride", "padding"}, "AvgPool2d": {"kernel_size", "stride", "padding"},
    "MaxPool2d": {"kernel_size", "stride", "padding"}, "Flatten": set(), "Add": set(),
    "Neuron": {"shape", "reset_mode", "compare", "source"}, "Output": {"mode"},
    "Reshape": {"shape"}, "Permute": {"perm"}, "Slice": {"axis", "start", "stop"},
    "MatMul": {"lhs", "rhs"}, "Mul": {"lhs", "rhs"}, "ReduceSum": {"axis", "keepdim"}, "Scale": set(),
}
_ARRAY_FIELDS = {"Linear": {"weight", "bias"}, "Conv2d": {"weight", "bias"}, "Neuron": set(NEURON_PARAMS),
                 "Scale": {"weight", "bias"}}


# ----------------------------------------------------------------------------- writing
class _Writer:
    """Accumulates ONNX nodes, initializers and names for one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        #: initializers in file order: (name, array) built in place by ``store_initializers``, or a
        #: ready TensorProto for the dtypes only ``numpy_helper.from_array`` knows how to encode
        self.initializers: list[tuple[str, np.ndarray] | onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.metadata: dict[str, str] = {}
        self.delays: dict[str, str] = {}  # source node -> tensor holding its previous-step value
        self.names: set[str] = set()

    def _claim(self, name: str) -> str:
        if name in self.names:
            raise SnnCompileError(f"graph '{self.graph.name}': name '{name}' is used twice "
                                  f"(node names may not contain '::')")
        self.names.add(name)
        return name

    def tensor(self, name: str, array: np.ndarray) -> str:
        """An initializer with ``array``'s exact bytes and dtype."""
        array = np.asarray(array)
        if _in_place(array):
            self.initializers.append((self._claim(name), array))
            return name
        try:
            proto = numpy_helper.from_array(np.array(array, order="C"), self._claim(name))
        except Exception as exc:
            raise SnnCompileError(f"array '{name}' of dtype {array.dtype} cannot be stored in ONNX ({exc})") from None
        self.initializers.append(proto)
        return name

    def store_initializers(self, container) -> None:
        """Fill the model's initializer list. Plain numeric arrays are written straight into it
        (the bytes ``from_array`` would give): building TensorProtos and appending them copies every
        weight once more, 240 MB for Spikingformer-8-512."""
        for entry in self.initializers:
            if isinstance(entry, onnx.TensorProto):
                container.append(entry)
                continue
            name, array = entry
            tensor = container.add()
            tensor.dims.extend(array.shape)
            tensor.name = name
            tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            tensor.raw_data = np.ascontiguousarray(array).tobytes()

    def param(self, node: ir.Node, field: str, array: np.ndarray) -> str:
        """An operator input holding ``array`` as float64 (a Cast when stored otherwise)."""
        name = self.tensor(f"{node.name}::{field}", array)
        if np.asarray(array).dtype == np.float64:
            return name
        cast = self._claim(f"{name}::double")
        self.nodes.append(helper.make_node("Cast", [name], [cast], name=cast, to=TensorProto.DOUBLE))
        return cast

    def activation(self, src: str, dst: str) -> str:
        if not self.graph.delay(src, dst):
            return src
        if src not in self.delays:
            out = self._claim(f"{src}::prev")
            self.nodes.append(_make_node("Delay", [], out, DOMAIN,
                                         {"source": src, "shape": _ints("shape", self.graph.shape(src))}))
            self.delays[src] = out
        return self.delays[src]

    def add_node(self, node: ir.Node) -> None:
        _check_fields_known(node)
        name = node.name
        self._claim(name)
        if not isinstance(node, ir.Input):  # the Input is the graph input
            ins = [self.activation(src, name) for src in self.graph.inputs_of(name)]
            op, inputs, attrs, domain = _encode(self, node, ins)
            self.nodes.append(_make_node(op, inputs, name, domain, attrs))
            if not isinstance(node, ir.Output):
                self.value_info.append(_value_info(name, self.graph.shape(name)))
        fixed = getattr(node, "fixed", None)  # any node may carry one (Input and Output too)
        if fixed is not None:
            spec = _encode_value(fixed, self, f"{name}::fixed")
            self.metadata[_FIXED_PREFIX + name] = json.dumps(spec, allow_nan=True)


def _check_fields_known(node: ir.Node) -> None:
    known_arrays = _ARRAY_FIELDS.get(node.kind, set())  # an optional array left None is an "attribute"
    attrs = set(node.attributes()) - _ATTRIBUTE_FIELDS.get(node.kind, set()) - known_arrays
    arrays = set(node.arrays()) - known_arrays
    if node.kind not in _ATTRIBUTE_FIELDS or attrs or arrays:
        raise SnnCompileError(f"node '{node.name}' ({node.kind}): field(s) {sorted(attrs | arrays)} have no "
                              f"ONNX encoding; extend snncompile/ir/onnx_format.py")


def _make_node(op: str, inputs: list[str], output: str, domain: str, attrs: dict) -> onnx.NodeProto:
    """A node named like its one output; AttributeProto values (e.g. empty INTS) go in as they are."""
    node = helper.make_node(op, inputs, [output], name=output, domain=domain,
                            **{k: v for k, v in attrs.items() if not isinstance(v, onnx.AttributeProto)})
    node.attribute.extend(v for v in attrs.values() if isinstance(v, onnx.AttributeProto))
    return node


def _ints(attr_name: str, values) -> onnx.AttributeProto:
    return helper.make_attribute(attr_name, [int(v) for v in values], attr_type=onnx.AttributeProto.INTS)


def _pool_attrs(node) -> dict:
    ph, pw = node.padding
    return {"kernel_shape": list(node.kernel_size), "strides": list(node.stride), "pads": [ph, pw, ph, pw]}


def _encode(w: _Writer, node: ir.Node, ins: list[str]) -> tuple[str, list[str], dict, str]:
    """(op_type, inputs, attributes, domain) of the ONNX node for IR ``node``."""
    return WRITE_TABLE.lookup(node)(w, node, ins)


#: The ONNX writer: kind -> ``fn(writer, node, ins)`` giving (op_type, inputs, attributes, domain).
WRITE_TABLE = StageTable("onnx.write", says="ONNX writing")
WRITE_TABLE.declare(ir.Input)   # the graph input itself (``_Writer.add_node``), no ONNX node


@WRITE_TABLE.implements(ir.Linear)
def _encode_linear(w: _Writer, node: ir.Linear, ins: list[str]):
    inputs = ins + [w.param(node, "weight", node.weight)]
    if node.bias is not None:
        inputs.append(w.param(node, "bias", node.bias))
    return "Gemm", inputs, {"transB": 1}, ""


@WRITE_TABLE.implements(ir.Conv2d)
def _encode_conv2d(w: _Writer, node: ir.Conv2d, ins: list[str]):
    inputs = ins + [w.param(node, "weight", node.weight)]
    if node.bias is not None:
        inputs.append(w.param(node, "bias", node.bias))
    ph, pw = node.padding
    attrs = {"kernel_shape": list(node.weight.shape[2:]), "strides": list(node.stride),
             "pads": [ph, pw, ph, pw], "dilations": list(node.dilation), "group": node.groups}
    return "Conv", inputs, attrs, ""


WRITE_TABLE.add(lambda w, node, ins: ("SumPool", ins, _pool_attrs(node), DOMAIN), ir.SumPool2d)
WRITE_TABLE.add(lambda w, node, ins: ("AveragePool", ins, dict(_pool_attrs(node), count_include_pad=1), ""),
                ir.AvgPool2d)
WRITE_TABLE.add(lambda w, node, ins: ("MaxPool", ins, _pool_attrs(node), ""), ir.MaxPool2d)
WRITE_TABLE.add(lambda w, node, ins: ("Flatten", ins, {"axis": 1}, ""), ir.Flatten)
WRITE_TABLE.add(lambda w, node, ins: ("Sum", ins, {}, ""), ir.Add)
WRITE_TABLE.add(lambda w, node, ins: ("Output", ins, {"mode": node.mode}, DOMAIN), ir.Output)


@WRITE_TABLE.implements(ir.Neuron)
def _encode_neuron(w: _Writer, node: ir.Neuron, ins: list[str]):
    inputs = ins + [w.param(node, p, getattr(node, p)) for p in NEURON_PARAMS]
    attrs = {"reset_mode": node.reset_mode, "compare": node.compare,
             "shape": _ints("shape", node.shape), "source": node.source}
    return "Neuron", inputs, attrs, DOMAIN


def _onnx_axis(axis: int) -> int:
    """A per-sample axis as an axis of the batched ONNX tensor (negative axes count from the end in both)."""
    return axis + 1 if axis >= 0 else axis


def _int64s(w: _Writer, node: ir.Node, field: str, values) -> str:
    """An int64 initializer read as an op's constant input (never cast to double)."""
    return w.tensor(f"{node.name}::{field}", np.array(values, dtype=np.int64))


@WRITE_TABLE.implements(ir.Reshape)
def _encode_reshape(w: _Writer, node: ir.Reshape, ins: list[str]):
    # 0 copies the batch dimension N (allowzero=0), so shape inference keeps N symbolic
    return "Reshape", ins + [_int64s(w, node, "shape", (0,) + node.shape)], {}, ""


@WRITE_TABLE.implements(ir.Permute)
def _encode_permute(w: _Writer, node: ir.Permute, ins: list[str]):
    return "Transpose", ins, {"perm": _ints("perm", (0,) + tuple(p + 1 for p in node.perm))}, ""


@WRITE_TABLE.implements(ir.Slice)
def _encode_slice(w: _Writer, node: ir.Slice, ins: list[str]):
    bounds = [_int64s(w, node, f, [v]) for f, v in
              (("starts", node.start), ("ends", node.stop), ("axes", _onnx_axis(node.axis)))]
    return "Slice", ins + bounds, {}, ""


@WRITE_TABLE.implements(ir.ReduceSum)
def _encode_reduce_sum(w: _Writer, node: ir.ReduceSum, ins: list[str]):
    axes = _int64s(w, node, "axes", [_onnx_axis(node.axis)])
    return "ReduceSum", ins + [axes], {"keepdims": int(node.keepdim)}, ""


@WRITE_TABLE.implements(ir.MatMul, ir.Mul)
def _encode_product(w: _Writer, node, ins: list[str]):
    # standard MatMul / Mul of two activations; what each operand holds goes in the metadata
    w.metadata[_OPERANDS_PREFIX + node.name] = json.dumps({"lhs": node.lhs, "rhs": node.rhs})
    return node.kind, ins, {}, ""


@WRITE_TABLE.implements(ir.Scale)
def _encode_scale(w: _Writer, node: ir.Scale, ins: list[str]):
    inputs = ins + [w.param(node, "weight", node.weight)]
    if node.bias is not None:
        inputs.append(w.param(node, "bias", node.bias))
    return "Scale", inputs, {}, DOMAIN


def _in_place(array: np.ndarray) -> bool:
    """Bool, integer and float arrays in native little-endian order: their ONNX raw_data is
    just their bytes (what ``numpy_helper.from_array`` writes for them)."""
    return array.dtype.kind in "biuf" and array.dtype.isnative and np.little_endian


def _value_info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.DOUBLE, ["N"] + [int(s) for s in shape])


def _encode_value(value: Any, w: _Writer, path: str) -> Any:
    """JSON-able description of a ``fixed`` value; arrays go to initializers named by ``path``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode_value(getattr(value, f.name), w, f"{path}.{f.name}")
                  for f in dataclasses.fields(value)}
        return {"dataclass": type(value).__name__, "fields": fields}
    if isinstance(value, np.ndarray):
        return {"array": w.tensor(path, value)}
    if isinstance(value, np.generic):
        return {"scalar": w.tensor(path, np.asarray(value))}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value, "type": type(value).__name__}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [_encode_value(v, w, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode_value(v, w, f"{path}.{k}") for k, v in value.items()}}
    raise SnnCompileError(f"'{path}': a fixed-point field of type {type(value).__name__} cannot be stored "
                          f"(use numpy arrays, numbers, strings, lists, dicts or dataclasses)")


def to_model(graph: Graph) -> onnx.ModelProto:
    """The ONNX model of ``graph`` (shapes inferred on the way)."""
    register()
    graph.infer_shapes()
    check_operands(graph)  # a file whose products record the wrong operands could not be read back
    inp, out = graph.input, graph.output
    w = _Writer(graph)
    for node in graph:
        w.add_node(node)
    onnx_graph = helper.make_graph(
        w.nodes, graph.name,
        inputs=[_value_info(inp.name, inp.shape)],
        outputs=[_value_info(out.name, graph.shape(out.name))],
        value_info=w.value_info)
    model = helper.make_model(  # copies the graph: the weights go in afterwards, in place
        onnx_graph, producer_name=PRODUCER, ir_version=IR_VERSION, doc_string=DOC,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, VERSION)])
    w.store_initializers(model.graph.initializer)
    try:
        meta_json = json.dumps(graph.meta, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise SnnCompileError(f"graph '{graph.name}': graph.meta cannot be stored as JSON ({exc})") from None
    meta = {"snncompile.format_version": FORMAT_VERSION, "snncompile.graph_name": graph.name,
            "snncompile.meta": meta_json}
    if graph.timesteps is not None:
        meta["snncompile.timesteps"] = str(int(graph.timesteps))
    meta.update(w.metadata)
    helper.set_model_props(model, meta)
    return stamp_digest(model)


def content_digest(model: onnx.ModelProto) -> str:
    """SHA-256 of the graph (nodes, weights, shapes) and the metadata, the digest entry excluded."""
    h = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    for prop in sorted(model.metadata_props, key=lambda p: p.key):
        if prop.key != _DIGEST:
            h.update(f"\0{prop.key}\0{prop.value}".encode())
    return h.hexdigest()


def stamp_digest(model: onnx.ModelProto) -> onnx.ModelProto:
    """Record :func:`content_digest` in the model (call again after editing a model on purpose)."""
    props = {p.key: p.value for p in model.metadata_props if p.key != _DIGEST}
    props[_DIGEST] = content_digest(model)
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    return model


def save_onnx(graph: Graph, path) -> Path:
    """Write ``graph`` to ``path`` (all or nothing: a failure leaves no file)."""
    from snncompile.commands._common import atomic_output

    model = to_model(graph)
    try:
        data = model.SerializeToString()  # once: the checker and the file both take these bytes
    except ValueError as exc:  # e.g. a model over protobuf's 2 GB limit
        raise SnnCompileError(f"cannot write '{path}': {exc}") from None
    _check(data, str(path))
    with atomic_output(path) as tmp:
        try:
            Path(tmp).write_bytes(data)
        except OSError as exc:
            raise SnnCompileError(f"cannot write '{path}': {exc}") from None
    return Path(path)


# ----------------------------------------------------------------------------- reading
#: Largest ``snncompile.timesteps`` a graph file may declare.
MAX_TIMESTEPS = 1_000_000
#: Fields of the fixed-point dataclasses that hold text or real numbers (all others: integers).
_TEXT_FIELDS, _REAL_FIELDS = {"reset_mode", "compare", "mode"}, {"scale", "in_scale"}


def _check_field_value(node: str, cls: str, key: str, value) -> None:
    """Integers where integers belong (a NaN or 2.5 would be cast silently), text for modes."""
    if key in _TEXT_FIELDS:
        ok = isinstance(value, str)
    elif key in _REAL_FIELDS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic, int)) else None
        ok = arr is not None and arr.dtype.kind in "iu" and not isinstance(value, bool)
    if not ok:
        kind = getattr(value, "dtype", type(value).__name__)
        raise SnnCompileError(f"node '{node}': fixed-point {cls}.{key} holds {kind} {_short(value)}, "
                              f"expected {'text' if key in _TEXT_FIELDS else 'a number' if key in _REAL_FIELDS else 'integers'}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_onnx(path) -> Graph:
    """Read a graph written by :func:`save_onnx`; every failure is a SnnCompileError naming ``path``."""
    register()
    path = Path(path)
    from snncompile.commands._common import check_input_file

    if path.exists() and not path.is_dir():
        check_input_file(path, "graph")   # a FIFO, socket or device: named, never read
    if not path.exists():
        check_input_file(path, "graph")   # missing, or a symlink loop: says which
    if path.is_dir():
        raise SnnCompileError(f"graph file '{path}' is a folder, not an ONNX file")
    if path.stat().st_size == 0:
        raise SnnCompileError(f"graph file '{path}' is empty")
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)  # external data is never followed (refused below)
    except Exception as exc:  # protobuf DecodeError, OSError...
        raise SnnCompileError(f"'{path}' is not a readable ONNX file (truncated, or not ONNX at all: "
                              f"{type(exc).__name__}: {exc})") from None
    return _from_model(model, str(path), data)


def from_model(model: onnx.ModelProto, source: str = "<model>") -> Graph:
    """The IR graph of an snncompile ONNX model; ``source`` names it in error messages."""
    return _from_model(model, source, None)


def _from_model(model: onnx.ModelProto, source: str, serialized: Optional[bytes]) -> Graph:
    """:func:`from_model`; ``serialized``: the bytes ``model`` was parsed from, which the checker
    reads instead of a fresh serialization (a second pass over every weight)."""
    register()
    _check_text(model, source)
    meta = {p.key: p.value for p in model.metadata_props}
    opsets = {o.domain: o.version for o in model.opset_import}
    if DOMAIN not in opsets or "snncompile.format_version" not in meta:
        raise SnnCompileError(f"'{source}' is an ONNX model but not an snncompile graph "
                              f"(no '{DOMAIN}' opset or snncompile metadata)")
    if meta["snncompile.format_version"] != FORMAT_VERSION:
        raise SnnCompileError(f"'{source}': snncompile format version {meta['snncompile.format_version']!r} "
                              f"is not supported (this snncompile reads version {FORMAT_VERSION})")
    if meta.get(_DIGEST) != content_digest(model):
        why = "does not match the SHA-256 digest written with it" if _DIGEST in meta else "has no SHA-256 digest"
        raise SnnCompileError(f"'{source}' is corrupted: its content {why} (damaged, or edited after "
                              f"snncompile wrote it; snncompile.ir.onnx_format.stamp_digest re-signs a "
                              f"deliberately edited model)")
    for node in model.graph.node:
        if (node.op_type, node.domain) not in _READERS:
            raise SnnCompileError(f"'{source}': node '{node.name}' uses op '{node.op_type}' of domain "
                                  f"'{node.domain or 'ai.onnx'}', which is not part of the snncompile format")
    external = next((t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL), None)
    if external is not None:
        raise SnnCompileError(f"'{source}': tensor '{external}' is stored in an external file, which is not "
                              f"part of the snncompile format (snncompile files hold every array)")
    try:
        _check(model if serialized is None else serialized, source)
    except SnnCompileError as checker_error:
        raise (_reader_reason(model, meta, source) or checker_error) from None
    return _read(model, meta, source)


def _read(model: onnx.ModelProto, meta: dict[str, str], source: str) -> Graph:
    try:
        return _Reader(model, meta, source).graph()
    except SnnCompileError as exc:
        raise SnnCompileError(f"'{source}': {exc}") from None


def _reader_reason(model: onnx.ModelProto, meta: dict[str, str], source: str) -> Optional[SnnCompileError]:
    """For a file the checker refused: the reader's own reason, which names the node and what is
    wrong in the IR's terms ("slice 0:7 does not fit axis 0 of size 3" where the checker says
    "inferred shape and existing shape differ"), or None when the reader finds nothing."""
    try:
        _read(model, meta, source)
    except SnnCompileError as exc:
        return exc
    except Exception:  # malformed beyond what the reader checks: the checker's message says it
        return None
    return None


def _check_text(model: onnx.ModelProto, source: str) -> None:
    """Names and string attributes must be UTF-8 text (protobuf hands out bytes when they are not)."""
    strings = [model.graph.name] + [p.key for p in model.metadata_props] + [p.value for p in model.metadata_props]
    strings += [v.name for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)]
    strings += [t.name for t in model.graph.initializer]
    for node in model.graph.node:
        strings += [node.name, node.op_type, node.domain, *node.input, *node.output]
        strings += [a.name for a in node.attribute]
        for a in node.attribute:
            try:
                a.s.decode("utf-8")
            except UnicodeDecodeError:
                strings.append(a.s)
    if any(not isinstance(s, str) for s in strings):
        raise SnnCompileError(f"'{source}' is corrupted: it holds names or text that are not valid UTF-8")
    names = [p.value for p in model.metadata_props if p.key == "snncompile.graph_name"] + [model.graph.name]
    names += [p.key for p in model.metadata_props]
    names += [n.name for n in model.graph.node] + [o for n in model.graph.node for o in n.output]
    names += [v.name for v in list(model.graph.input) + list(model.graph.output)]
    bad = next((n for n in names if any(not c.isprintable() for c in n)), None)
    if bad is not None:
        raise SnnCompileError(f"'{source}': the name {bad!r} holds a control character (a newline, tab, ...); "
                              f"names must be printable text")


def _check(model: onnx.ModelProto | bytes, source: str) -> None:
    """``onnx.checker.check_model(full_check=True)``, on the model or its serialized bytes."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnnCompileError(f"'{source}' fails the ONNX checker: {first}") from None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _symmetric_pads(node, attrs) -> tuple[int, int]:
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise SnnCompileError(f"node '{node.name}' ({node.op_type}): pads {pads} are not symmetric")
    if _str(attrs.get("auto_pad", "NOTSET")) != "NOTSET" or attrs.get("ceil_mode", 0):
        raise SnnCompileError(f"node '{node.name}' ({node.op_type}): auto_pad/ceil_mode are not supported")
    return tuple(pads[:2])


def _pool(cls):
    def read(r: "_Reader", node, attrs, params):
        if "dilations" in attrs and list(attrs["dilations"]) != [1, 1]:
            raise SnnCompileError(f"node '{node.name}' ({node.op_type}): dilated pooling is not supported")
        if node.op_type == "AveragePool" and attrs.get("count_include_pad", 0) != 1:
            raise SnnCompileError(f"node '{node.name}' (AveragePool): count_include_pad must be 1")
        return cls(node.output[0], kernel_size=tuple(attrs["kernel_shape"]),
                   stride=tuple(attrs.get("strides", (1, 1))), padding=_symmetric_pads(node, attrs))
    return read, 1


def _read_gemm(r, node, attrs, params):
    if attrs.get("transA", 0) or attrs.get("transB", 0) != 1 or attrs.get("alpha", 1.0) != 1.0 \
            or attrs.get("beta", 1.0) != 1.0:
        raise SnnCompileError(f"node '{node.name}' (Gemm): only transB=1, alpha=beta=1 is snncompile's Linear")
    return ir.Linear(node.output[0], weight=params[0], bias=params[1] if len(params) > 1 else None)


def _read_conv(r, node, attrs, params):
    return ir.Conv2d(node.output[0], weight=params[0], bias=params[1] if len(params) > 1 else None,
                     stride=tuple(attrs.get("strides", (1, 1))), padding=_symmetric_pads(node, attrs),
                     dilation=tuple(attrs.get("dilations", (1, 1))), groups=attrs.get("group", 1))


def _read_neuron(r, node, attrs, params):
    if len(params) != len(NEURON_PARAMS):
        raise SnnCompileError(f"node '{node.name}' (Neuron): expects {len(NEURON_PARAMS)} parameter inputs")
    return ir.Neuron(node.output[0], shape=tuple(attrs.get("shape", ())), reset_mode=_str(attrs["reset_mode"]),
                     compare=_str(attrs["compare"]), source=_str(attrs.get("source", "")),
                     **dict(zip(NEURON_PARAMS, params)))


def _fail(node, why: str) -> SnnCompileError:
    return SnnCompileError(f"node '{node.name}' ({node.op_type}): {why}")


def _int_list(node, what: str, values: np.ndarray) -> list[int]:
    """A constant int64 vector input (shape, starts, axes...) as Python ints."""
    if values.dtype != np.int64 or values.ndim != 1:
        raise _fail(node, f"{what} must be an int64 vector, is {values.dtype} of shape {values.shape}")
    return [int(v) for v in values]


def _sample_axis(node, what: str, values: np.ndarray) -> int:
    """The per-sample axis of a one-element ONNX axes input (the batch axis 0 is refused)."""
    axes = _int_list(node, what, values)
    if len(axes) != 1:
        raise _fail(node, f"{what} must name exactly one axis, names {axes}")
    if axes[0] == 0:
        raise _fail(node, f"{what} [0] is the batch axis; snncompile slices and sums within a sample only")
    return axes[0] - 1 if axes[0] > 0 else axes[0]


def _read_reshape(r, node, attrs, params):
    if len(params) != 1 or attrs.get("allowzero", 0):
        raise _fail(node, "expects one stored shape input and allowzero=0")
    shape = _int_list(node, "shape", params[0])
    if not shape or shape[0] != 0 or any(d <= 0 for d in shape[1:]):
        raise _fail(node, f"shape {shape} must be 0 (copy the batch dimension) followed by the positive "
                          f"per-sample sizes")
    return ir.Reshape(node.output[0], shape=tuple(shape[1:]))


def _read_transpose(r, node, attrs, params):
    perm = list(attrs.get("perm", []))
    if not perm:
        raise _fail(node, "has no perm (ONNX's default reverses every axis, the batch axis too)")
    if sorted(perm) != list(range(len(perm))):
        raise _fail(node, f"perm {perm} is not a permutation of the axes 0..{len(perm) - 1}")
    if perm[0] != 0:
        raise _fail(node, f"perm {perm} moves the batch axis 0; snncompile permutes axes within a sample")
    return ir.Permute(node.output[0], perm=tuple(p - 1 for p in perm[1:]))


def _read_slice(r, node, attrs, params):
    if len(params) == 4 and _int_list(node, "steps", params[3]) == [1]:
        params = params[:3]
    if len(params) != 3:
        raise _fail(node, "expects stored starts, ends and axes inputs (steps, if any, 1)")
    (start,), (stop,) = (_one(node, what, p) for what, p in (("starts", params[0]), ("ends", params[1])))
    return ir.Slice(node.output[0], axis=_sample_axis(node, "axes", params[2]), start=start, stop=stop)


def _one(node, what: str, values: np.ndarray) -> list[int]:
    got = _int_list(node, what, values)
    if len(got) != 1:
        raise _fail(node, f"{what} must hold one value, holds {got}")
    return got


def _read_reduce_sum(r, node, attrs, params):
    if len(params) != 1:
        raise _fail(node, "expects one stored axes input")
    return ir.ReduceSum(node.output[0], axis=_sample_axis(node, "axes", params[0]),
                        keepdim=bool(attrs.get("keepdims", 1)))


def _read_product(cls):
    def read(r: "_Reader", node, attrs, params):
        lhs, rhs = r.operands(node)
        return cls(node.output[0], lhs=lhs, rhs=rhs)
    return read, 2


def _read_scale(r, node, attrs, params):
    return ir.Scale(node.output[0], weight=params[0], bias=params[1] if len(params) > 1 else None)


#: (op_type, domain) -> (reader(reader, node, attrs, params) -> ir.Node, number of activation inputs or None=all)
_READERS = {
    ("Gemm", ""): (_read_gemm, 1),
    ("Conv", ""): (_read_conv, 1),
    ("SumPool", DOMAIN): _pool(ir.SumPool2d),
    ("AveragePool", ""): _pool(ir.AvgPool2d),
    ("MaxPool", ""): _pool(ir.MaxPool2d),
    ("Flatten", ""): (lambda r, n, a, p: ir.Flatten(n.output[0]), 1),
    ("Sum", ""): (lambda r, n, a, p: ir.Add(n.output[0]), None),
    ("Neuron", DOMAIN): (_read_neuron, 1),
    ("Output", DOMAIN): (lambda r, n, a, p: ir.Output(n.output[0], mode=_str(a["mode"])), 1),
    ("Reshape", ""): (_read_reshape, 1),
    ("Transpose", ""): (_read_transpose, 1),
    ("Slice", ""): (_read_slice, 1),
    ("ReduceSum", ""): (_read_reduce_sum, 1),
    ("MatMul", ""): _read_product(ir.MatMul),
    ("Mul", ""): _read_product(ir.Mul),
    ("Scale", DOMAIN): (_read_scale, 1),
    ("Cast", ""): (None, 0),
    ("Delay", DOMAIN): (None, 0),
}


#: The ONNX reader by kind: the (op_type, domain) each kind is read from (the dispatch
#: itself is ``_READERS``, by op; tests check the two agree).
READ_TABLE = StageTable("onnx.read", says="ONNX reading")
READ_TABLE.add(None, ir.Input)  # the graph input itself (``_Reader.graph``)
for _op, _kind in {("Gemm", ""): ir.Linear, ("Conv", ""): ir.Conv2d, ("SumPool", DOMAIN): ir.SumPool2d,
                   ("AveragePool", ""): ir.AvgPool2d, ("MaxPool", ""): ir.MaxPool2d,
                   ("Flatten", ""): ir.Flatten, ("Sum", ""): ir.Add, ("Neuron", DOMAIN): ir.Neuron,
                   ("Output", DOMAIN): ir.Output, ("Reshape", ""): ir.Reshape, ("Transpose", ""): ir.Permute,
                   ("Slice", ""): ir.Slice, ("ReduceSum", ""): ir.ReduceSum, ("MatMul", ""): ir.MatMul,
                   ("Mul", ""): ir.Mul, ("Scale", DOMAIN): ir.Scale}.items():
    READ_TABLE.add(_op, _kind)


class _Reader:
    """Rebuilds the IR graph from a checked snncompile ONNX model."""

    def __init__(self, model: onnx.ModelProto, meta: dict[str, str], source: str):
        self.model, self.meta, self.source = model, meta, source
        self.arrays = {t.name: np.array(numpy_helper.to_array(t)) for t in model.graph.initializer}  # own, writable
        self.params: dict[str, np.ndarray] = dict(self.arrays)  # tensor -> stored array (through Casts)
        self.delayed: dict[str, str] = {}  # Delay output -> source node

    def graph(self) -> Graph:
        g_onnx = self.model.graph
        g = Graph(self.meta.get("snncompile.graph_name", g_onnx.name), timesteps=self._timesteps())
        try:
            g.meta = json.loads(self.meta.get("snncompile.meta", "{}"))
        except json.JSONDecodeError as exc:
            raise SnnCompileError(f"metadata 'snncompile.meta' is not JSON ({exc})") from None
        if not isinstance(g.meta, dict):
            raise SnnCompileError(f"metadata 'snncompile.meta' must be a JSON object, is a "
                                  f"{type(g.meta).__name__}")
        if len(g_onnx.input) != 1 or len(g_onnx.output) != 1:
            raise SnnCompileError(f"expects one graph input and one output, has {len(g_onnx.input)} "
                                  f"and {len(g_onnx.output)}")
        dims = g_onnx.input[0].type.tensor_type.shape.dim
        if not dims or any(d.dim_value <= 0 for d in dims[1:]):
            raise SnnCompileError(f"graph input '{g_onnx.input[0].name}' needs a batch dimension and a fixed "
                                  f"per-sample shape, has {[d.dim_value or d.dim_param for d in dims]}")
        inp = g.add(ir.Input(g_onnx.input[0].name, shape=tuple(d.dim_value for d in dims[1:])))
        self._attach_fixed(g.node(inp))
        edges = []
        for node in g_onnx.node:
            attrs = _attrs(node)
            if node.op_type == "Cast":
                self._read_cast(node, attrs)
                continue
            if node.op_type == "Delay":
                self.delayed[node.output[0]] = _str(attrs["source"])
                continue
            read, n_act = _READERS[(node.op_type, node.domain)]
            n_act = len(node.input) if n_act is None else n_act
            params = [self._param(node, t) for t in node.input[n_act:] if t]
            ir_node = read(self, node, attrs, params)
            g.add(ir_node)
            self._attach_fixed(ir_node)
            edges += [(self.delayed.get(t, t), ir_node.name, int(t in self.delayed)) for t in node.input[:n_act]]
        for src, dst, delay in edges:
            if src not in g:
                raise SnnCompileError(f"node '{dst}' reads '{src}', which is no node of the graph")
            g.add_edge(src, dst, delay=delay)
        if g.output.name != g_onnx.output[0].name:
            raise SnnCompileError(f"the graph output '{g_onnx.output[0].name}' is not the Output node")
        g.infer_shapes()
        self._check_operand_metadata(g)
        check_operands(g)
        self._check_fixed(g)
        return g

    def operands(self, node) -> tuple[str, str]:
        """(lhs, rhs) of a product, from its ``snncompile.operands:<node>`` metadata."""
        text = self.meta.get(_OPERANDS_PREFIX + node.name)
        if text is None:
            raise _fail(node, f"has no '{_OPERANDS_PREFIX}{node.name}' metadata saying what its operands hold")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError:
            spec = None
        if not isinstance(spec, dict) or set(spec) != {"lhs", "rhs"}:
            raise _fail(node, f"operand metadata {text!r} must be a JSON object with 'lhs' and 'rhs'")
        return spec["lhs"], spec["rhs"]

    def _check_operand_metadata(self, g: Graph) -> None:
        for key in self.meta:
            name = key[len(_OPERANDS_PREFIX):]
            if key.startswith(_OPERANDS_PREFIX) and not (name in g and isinstance(g.node(name), ir.PRODUCTS)):
                raise SnnCompileError(f"operand metadata '{key}' names no MatMul or Mul of the graph")

    def _timesteps(self) -> Optional[int]:
        text = self.meta.get("snncompile.timesteps")
        if not text:
            return None
        if not text.isdigit() or not 1 <= int(text) <= MAX_TIMESTEPS:
            raise SnnCompileError(f"metadata 'snncompile.timesteps' is {text!r}: expected a whole number "
                                  f"of steps from 1 to {MAX_TIMESTEPS:,}")
        return int(text)

    def _check_fixed(self, g: Graph) -> None:
        """Fixed-point fields within Loihi's limits and fitting their node (a re-signed file
        may hold any number: du = 99999 or a weight of the wrong shape must not run)."""
        from snncompile.ir import fixed as fx

        for key in self.meta:
            if key.startswith(_FIXED_PREFIX) and key[len(_FIXED_PREFIX):] not in g:
                raise SnnCompileError(f"fixed-point metadata '{key}' names no node of the graph")
        fx.check_graph(g)

    def _read_cast(self, node, attrs) -> None:
        if node.input[0] not in self.arrays or attrs.get("to") != TensorProto.DOUBLE:
            raise SnnCompileError(f"node '{node.name}' (Cast): only casts of stored parameters to double "
                                  f"are part of the format")
        self.params[node.output[0]] = self.arrays[node.input[0]]

    def _param(self, node, tensor: str) -> np.ndarray:
        if tensor not in self.params:
            raise SnnCompileError(f"node '{node.name}' ({node.op_type}): parameter input '{tensor}' "
                                  f"is not a stored tensor")
        return self.params[tensor]

    def _attach_fixed(self, node: ir.Node) -> None:
        text = self.meta.get(_FIXED_PREFIX + node.name)
        if text is None:
            return
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SnnCompileError(f"node '{node.name}': fixed-point metadata is not JSON ({exc})") from None
        node.fixed = self._decode(spec, node.name)

    def _decode(self, spec, name: str):
        if not isinstance(spec, dict) or len(spec) not in (1, 2):
            raise SnnCompileError(f"node '{name}': malformed fixed-point metadata {spec!r}")
        if "dataclass" in spec:
            return self._dataclass(spec, name)
        if "array" in spec or "scalar" in spec:
            key = spec.get("array", spec.get("scalar"))
            if not isinstance(key, str) or key not in self.arrays:
                raise SnnCompileError(f"node '{name}': fixed-point array '{key}' is missing")
            arr = self.arrays[key]
            return arr if "array" in spec else arr[()]
        if "value" in spec:
            return spec["value"]
        if "list" in spec and isinstance(spec["list"], list):
            return [self._decode(v, name) for v in spec["list"]]
        if "tuple" in spec and isinstance(spec["tuple"], list):
            return tuple(self._decode(v, name) for v in spec["tuple"])
        if "dict" in spec and isinstance(spec["dict"], dict):
            return {k: self._decode(v, name) for k, v in spec["dict"].items()}
        raise SnnCompileError(f"node '{name}': malformed fixed-point metadata {spec!r}")

    def _dataclass(self, spec, name: str):
        from snncompile.ir import fixed as fixed_module

        cls = getattr(fixed_module, spec["dataclass"], None) if isinstance(spec["dataclass"], str) else None
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise SnnCompileError(f"node '{name}': fixed-point class {spec['dataclass']!r} is not defined in "
                                  f"snncompile.ir.fixed (file from another snncompile version?)")
        if not isinstance(spec.get("fields"), dict):
            raise SnnCompileError(f"node '{name}': fixed-point metadata of {cls.__name__} has no 'fields' object")
        values = {k: self._decode(v, name) for k, v in spec["fields"].items()}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if set(values) != set(fields):
            raise SnnCompileError(f"node '{name}': fixed-point class '{cls.__name__}' has fields "
                                  f"{sorted(fields)}, the file has {sorted(values)}")
        if cls.__name__ in fixed_module.FIXED_TYPES:
            for key, value in values.items():
                _check_field_value(name, cls.__name__, key, value)
        try:
            obj = cls(**{k: v for k, v in values.items() if fields[k].init})
        except (TypeError, ValueError, OverflowError) as exc:
            raise SnnCompileError(f"node '{name}': fixed-point {cls.__name__} has a malformed field "
                                  f"({exc})") from None
        for k, v in values.items():
            if not fields[k].init:
                object.__setattr__(obj, k, v)
        return obj
