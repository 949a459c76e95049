"""ONNX operator schemas of the ``ai.snncompile`` domain (version 1).

The ops that have no standard ONNX equivalent: ``Neuron`` (a stateful LIF population),
``Output`` (the readout), ``SumPool`` (a plain window sum; ONNX has no such op, and a
ones-weight depthwise Conv would be indistinguishable from a real one on reading),
``Delay`` (reads a tensor's value of the previous time step, so recurrent graphs stay
a DAG in ONNX) and ``Scale`` (a constant one-to-one synapse ``x * w + b``: one op with its
own fixed-point parameters, where a standard Mul is kept for products of two activations).
Each schema has a type/shape inference function, which is what lets
``onnx.checker.check_model(model, full_check=True)`` pass and check every shape.

:func:`register` is idempotent; :mod:`snncompile.ir.onnx_format` calls it before
writing or reading a model.
"""
from __future__ import annotations

from onnx import TensorProto, defs, helper

DOMAIN = "ai.snncompile"
VERSION = 1

#: Order of a Neuron's parameter inputs after the input current ``x`` (IR field names).
NEURON_PARAMS = ("du", "dv", "threshold", "bias", "reset_value", "reset_amount", "u_init", "v_init")

_S = defs.OpSchema
_DOUBLE = [("T", ["tensor(double)"], "Activations and float parameters are float64.")]


def _copy_input_type(ctx) -> None:
    ctx.set_output_type(0, ctx.get_input_type(0))


def _ints(ctx, name: str, default: list[int]) -> list[int]:
    attr = ctx.get_attribute(name)
    return list(attr.ints) if attr is not None and len(attr.ints) else list(default)


def _sum_pool_shape(ctx) -> None:
    """(N, C, H, W) -> (N, C, H', W') with the usual floor((H + pads - k) / s) + 1."""
    in_type = ctx.get_input_type(0)
    out = helper.make_tensor_type_proto(in_type.tensor_type.elem_type, None)
    dims = in_type.tensor_type.shape.dim
    if in_type.tensor_type.HasField("shape") and len(dims) == 4:
        k = _ints(ctx, "kernel_shape", [])
        s = _ints(ctx, "strides", [1, 1])
        p = _ints(ctx, "pads", [0, 0, 0, 0])
        new = [dims[0].dim_param or (dims[0].dim_value if dims[0].HasField("dim_value") else None),
               dims[1].dim_value if dims[1].HasField("dim_value") else None]
        for i in range(2):
            d = dims[2 + i]
            new.append((d.dim_value + p[i] + p[i + 2] - k[i]) // s[i] + 1 if d.HasField("dim_value") else None)
        out = helper.make_tensor_type_proto(in_type.tensor_type.elem_type, new)
    ctx.set_output_type(0, out)


def _delay_shape(ctx) -> None:
    """Shape (N, *shape) from the ``shape`` attribute (the per-sample shape)."""
    shape = _ints(ctx, "shape", [])
    ctx.set_output_type(0, helper.make_tensor_type_proto(TensorProto.DOUBLE, ["N"] + shape))


def _param(name: str, doc: str) -> _S.FormalParameter:
    return _S.FormalParameter(name, "T", doc)


def _attr(name: str, kind, doc: str, required: bool = True) -> _S.Attribute:
    return _S.Attribute(name, kind, doc, required=required)


def _schemas() -> list[_S]:
    A = _S.AttrType
    neuron = _S(
        "Neuron", DOMAIN, VERSION,
        "LIF-family neuron population, stateful over time. Per step, with state u, v "
        "(initialised from u_init, v_init at step 0): u = u*(1-du) + x; v = v*(1-dv) + u + bias; "
        "s = v > threshold (compare '>') or v >= threshold (compare '>='); reset 'zero': "
        "v = where(s, reset_value, v); 'subtract': v = v - reset_amount*s; 'none': v unchanged. "
        "Output: the spikes s (0/1). Parameters broadcast to the population shape (per sample).",
        inputs=[_param("x", "input current")] + [_param(p, f"parameter {p}") for p in NEURON_PARAMS],
        outputs=[_param("s", "spikes (0/1), same shape as x")],
        type_constraints=_DOUBLE,
        attributes=[
            _attr("reset_mode", A.STRING, "zero | subtract | none"),
            _attr("compare", A.STRING, "'>' or '>='"),
            _attr("shape", A.INTS, "population shape per sample (empty: taken from x)", required=False),
            _attr("source", A.STRING, "where the neuron came from, informational", required=False),
        ],
    )
    neuron.set_type_and_shape_inference_function(_copy_input_type)
    output = _S(
        "Output", DOMAIN, VERSION,
        "The readout, identity per step. mode 'spikes': x are output spikes, counted over time; "
        "'potential': x is a current accumulated over time by a non-leaky, non-spiking integrator; "
        "'membrane': x comes from a Neuron without reset (a leaky integrator, threshold +inf) and y is "
        "that neuron's membrane v after each step.",
        inputs=[_param("x", "spikes or current")],
        outputs=[_param("y", "the same values")],
        type_constraints=_DOUBLE,
        attributes=[_attr("mode", A.STRING, "spikes | potential | membrane")],
    )
    output.set_type_and_shape_inference_function(_copy_input_type)
    sum_pool = _S(
        "SumPool", DOMAIN, VERSION,
        "Sum over each kernel window with zero padding (an AveragePool times the window size, "
        "computed as a sum). A synapse whose weights are all 1.",
        inputs=[_param("x", "(N, C, H, W)")],
        outputs=[_param("y", "(N, C, H', W')")],
        type_constraints=_DOUBLE,
        attributes=[
            _attr("kernel_shape", A.INTS, "(kH, kW)"),
            _attr("strides", A.INTS, "(sH, sW)"),
            _attr("pads", A.INTS, "(top, left, bottom, right), symmetric"),
        ],
    )
    sum_pool.set_type_and_shape_inference_function(_sum_pool_shape)
    delay = _S(
        "Delay", DOMAIN, VERSION,
        "The value of tensor `source` at the previous time step (zeros at step 0): a recurrent "
        "edge. It has no graph input, so the ONNX graph stays acyclic.",
        inputs=[],
        outputs=[_param("y", "(N, *shape)")],
        type_constraints=_DOUBLE,
        attributes=[
            _attr("source", A.STRING, "name of the tensor whose previous-step value is read"),
            _attr("shape", A.INTS, "per-sample shape of that tensor", required=False),
        ],
    )
    delay.set_type_and_shape_inference_function(_delay_shape)
    scale = _S(
        "Scale", DOMAIN, VERSION,
        "y = x * weight (+ bias), weight and bias constant and broadcast to the per-sample shape "
        "(numpy rules, no more axes than a sample): a constant scale (* 0.125, 1/n of a mean, a "
        "per-head firing-rate factor) or an affine map no synapse before it absorbed. A one-to-one "
        "synapse with its own fixed-point parameters, hence not a standard Mul (+ Add), which "
        "between activations is a product of two activations.",
        inputs=[_param("x", "(N, *shape)"), _param("weight", "constant, broadcast to *shape"),
                _S.FormalParameter("bias", "T", "constant, broadcast to *shape",
                                   param_option=_S.FormalParameterOption.Optional)],
        outputs=[_param("y", "(N, *shape)")],
        type_constraints=_DOUBLE,
    )
    scale.set_type_and_shape_inference_function(_copy_input_type)
    return [neuron, output, sum_pool, delay, scale]


def _registered(name: str) -> bool:
    try:
        defs.get_schema(name, VERSION, DOMAIN)
        return True
    except defs.SchemaError:
        return False


def register() -> None:
    """Register the ``ai.snncompile`` schemas with ONNX (once per process)."""
    for schema in _schemas():
        if not _registered(schema.name):
            defs.register_schema(schema)
