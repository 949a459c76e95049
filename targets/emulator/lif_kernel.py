"""The torch engine's neuron update as one compiled pass (numba): every wrap written out.

Why: the tensor-op update makes ~10 passes over a population per step (dtype conversions,
decay products, range checks, folds, reset), which was half of the emulator's time on the
tiny Spikformer. This loop reads each activation once and updates u and v in place, with
the per-neuron arithmetic of the event engine (``event_kernel._lif``: ``lif_step_exact``
on int32 lanes), so it is exact for every input -- no bound to prove, no range check.

Editing: numba caches this file's kernels keyed by its own timestamp only; after a change
to ``event_kernel._lif`` touch this file too.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .event_kernel import _lif


@njit(inline="always")
def _rows(a, spikes, u, v, par, to_zero, forget_u, hold_v):
    for b in range(a.shape[0]):
        for i in range(a.shape[1]):
            u[b, i], v[b, i], spikes[b, i] = _lif(
                a[b, i], u[b, i], v[b, i], np.int64(par[0, i]), np.int64(par[1, i]),
                np.int64(par[2, i]), np.int64(par[3, i]), par[4, i], np.int64(par[5, i]),
                to_zero, forget_u, hold_v)


@njit(nogil=True, cache=True)
def lif_rows(a, spikes, u, v, par, to_zero, forget_u, hold_v):
    """One step of a population for a batch: ``a`` (B, n) integer-valued activations (any
    dtype), ``u``/``v`` (B, n) int32 states updated in place, ``spikes`` (B, n) written 0/1;
    ``par`` (6, n) int32 as ``events.EventProgram.params`` (keep_u, keep_v, bias, threshold
    minus [>=], reset value, reset amount). The flags become constants of one loop each."""
    if to_zero:
        if forget_u:
            _rows(a, spikes, u, v, par, True, True, hold_v)
        else:
            _rows(a, spikes, u, v, par, True, False, hold_v)
    elif forget_u:
        _rows(a, spikes, u, v, par, False, True, hold_v)
    else:
        _rows(a, spikes, u, v, par, False, False, hold_v)
