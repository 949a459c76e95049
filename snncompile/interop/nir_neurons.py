"""NIR's continuous-time neurons as discrete IR dynamics, and the ``r``/``dt`` conventions.

NIR writes ``tau dv/dt = (v_leak - v) + r I`` (LIF, LI), ``dv/dt = r I`` (IF, I) and, for
CubaLIF/CubaLI, first ``tau_syn dI/dt = -I + w_in S``. We discretise with forward Euler at
step ``dt``, updating the current before the membrane, which is exactly what the PyTorch
libraries do per step:

    I[t] = (1 - dt/tau_syn) I[t-1] + (w_in dt/tau_syn) S[t]      (Cuba only)
    v[t] = (1 - dt/tau) v[t-1] + (r dt/tau) I[t] + (dt/tau) v_leak

So ``dv = dt/tau``, ``du = dt/tau_syn`` (1 without a synaptic state), ``bias = dv*v_leak``,
and an *input gain* (``r dt/tau``, times ``w_in dt/tau_syn`` for Cuba) that the IR Neuron
lacks: the importer folds it into the synapse feeding the neuron.

Exporters disagree on ``r`` (see ``shared/design/neuron-mapping.md``): snnTorch writes
``r = tau/dt`` (gain 1), SpikingJelly ``r = 1/dt`` for IF (gain 1) and ``r = 1`` or
``tau/dt`` for LIF, Norse ``r = 1`` (gain dt/tau, the literal reading), Sinabs and Norse
``r = 1`` for IF meaning one unit per step. Every LIF-family reading above is the literal
one; only IF with ``r = 1`` is read per step (its literal gain ``dt`` is never meant).
The convention assumed is recorded per node for ``inspect``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import nir
import numpy as np

from snncompile.errors import SnnCompileError

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)
FILTERS = (nir.LI, nir.CubaLI, nir.I)
NEURONS = SPIKING + FILTERS


@dataclass
class Dynamics:
    """Discrete per-step parameters of one NIR neuron node (arrays in the NIR node's shape)."""

    du: np.ndarray
    dv: np.ndarray
    gain: np.ndarray            # multiplies the summed input current
    bias: np.ndarray            # added to v every step
    threshold: Optional[np.ndarray] = None
    reset_value: Optional[np.ndarray] = None
    v_init: Optional[np.ndarray] = None
    #: For Cuba filters: the gain on the synaptic current (``gain`` then applies to v).
    current_gain: Optional[np.ndarray] = None
    convention: str = ""


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _close(a, b) -> bool:
    return bool(np.allclose(_f(a), _f(b), rtol=1e-5, atol=0.0))


def classify_r(r, tau, dt: float, integrator: bool = False) -> tuple[str, np.ndarray]:
    """(convention label, per-step input gain) for resistance ``r`` (``tau`` None for IF)."""
    r = _f(r)
    if integrator:
        if _close(r, 1.0):
            return "r=1 per step (input gain 1, Sinabs/Norse)", r
        if _close(r * dt, 1.0):
            return "r=1/dt (input gain r*dt = 1 per step, SpikingJelly)", r * dt
        return "r continuous (input gain r*dt)", r * dt
    tau = _f(tau)
    gain = r * dt / tau
    if _close(r, tau / dt):
        return "r=tau/dt (input gain 1 per step, snnTorch/SpikingJelly)", gain
    if _close(r, 1.0):
        return "r=1 continuous (input gain dt/tau, Norse)", gain
    return "r continuous (input gain r*dt/tau)", gain


def dt_dependence(node: nir.NIRNode) -> Optional[float]:
    """The ``dt`` a node implies under the ``r = tau/dt`` or ``r = 1/dt`` conventions: one
    value shared by all its neurons, else None."""
    if isinstance(node, (nir.IF, nir.I)):
        r = _f(node.r)
        implied = 1.0 / r
    elif isinstance(node, (nir.LIF, nir.LI)):
        r = _f(node.r)
        implied = _f(node.tau) / r
    elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        r = _f(node.r)
        implied = _f(node.tau_mem) / r
    else:
        return None
    first = float(np.reshape(implied, -1)[0])
    if _close(r, 1.0) or not _close(implied, first):
        return None
    return first


def needs_dt(node: nir.NIRNode) -> bool:
    return isinstance(node, (nir.LIF, nir.LI, nir.CubaLIF, nir.CubaLI)) or (
        isinstance(node, (nir.IF, nir.I)) and not _close(node.r, 1.0))


def dynamics(node: nir.NIRNode, name: str, dt: float) -> Dynamics:
    """Discretise one NIR neuron node at step ``dt`` (equations in the module docstring)."""
    one = lambda like: np.ones_like(_f(like))  # noqa: E731
    if isinstance(node, nir.Threshold):
        thr = _f(node.threshold)
        return Dynamics(du=one(thr), dv=one(thr), gain=one(thr), bias=0 * thr, threshold=thr,
                        reset_value=0 * thr, v_init=0 * thr, convention="stateless threshold")
    if isinstance(node, nir.I):  # a non-leaky, non-spiking integrator: read out as potential
        label, gain = classify_r(node.r, None, dt, integrator=True)
        zero = 0 * _f(node.r)
        return Dynamics(du=one(node.r), dv=zero, gain=gain, bias=zero, v_init=zero, convention=label)
    if isinstance(node, nir.IF):
        label, gain = classify_r(node.r, None, dt, integrator=True)
        thr = _f(node.v_threshold)
        reset = _f(node.v_reset)
        return Dynamics(du=one(thr), dv=0 * thr, gain=gain, bias=0 * thr, threshold=thr,
                        reset_value=reset, v_init=reset, convention=label)
    if isinstance(node, (nir.LIF, nir.LI)):
        tau = _f(node.tau)
        _check_tau(tau, dt, name, "tau")
        label, gain = classify_r(node.r, tau, dt)
        dv, v_leak = dt / tau, _f(node.v_leak)
        common = dict(du=one(tau), dv=dv, gain=gain, bias=dv * v_leak, v_init=v_leak, convention=label)
        if isinstance(node, nir.LI):
            return Dynamics(**common)
        return Dynamics(**common, threshold=_f(node.v_threshold), reset_value=_f(node.v_reset))
    if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        tau_mem, tau_syn = _f(node.tau_mem), _f(node.tau_syn)
        _check_tau(tau_mem, dt, name, "tau_mem")
        _check_tau(tau_syn, dt, name, "tau_syn")
        label, gain = classify_r(node.r, tau_mem, dt)
        du, dv, v_leak = dt / tau_syn, dt / tau_mem, _f(node.v_leak)
        current_gain = _f(node.w_in) * du
        common = dict(du=du, dv=dv, bias=dv * v_leak, v_init=v_leak, convention=label)
        if isinstance(node, nir.CubaLI):
            return Dynamics(**common, gain=gain, current_gain=current_gain)
        # The IR neuron's u is the current already scaled into membrane units.
        return Dynamics(**common, gain=gain * current_gain, threshold=_f(node.v_threshold),
                        reset_value=_f(node.v_reset))
    raise TypeError(f"not a NIR neuron: {type(node).__name__}")


def _check_tau(tau: np.ndarray, dt: float, name: str, key: str) -> None:
    if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
        raise SnnCompileError(f"NIR node '{name}': {key} must be positive and finite")
    if np.any(tau < dt):
        raise SnnCompileError(
            f"NIR node '{name}': {key} = {float(np.min(tau)):g} is shorter than dt = {dt:g}; "
            f"forward Euler at this step would overshoot (decay {float(np.max(dt / tau)):g} > 1). "
            f"Give a smaller --dt")
