"""PyTorch eager runs of the spiking-transformer zoo, for the tests that hold a target equal to them."""
from __future__ import annotations

import numpy as np

#: QKFormer's stage-3 ``proj_lif`` runs on ``x.flatten(0, 1)`` (as the official file): in PyTorch
#: its state passes between the samples of a batch, so eager is compared at batch size 1.
PER_SAMPLE_EAGER = {"qkformer"}


def eager_run(tzoo, zm, model, x, per_sample: bool):
    """Per-step head outputs (n, T, classes) and, per neuron module, spike counts (n, *shape)
    and per-step totals (n, T), from PyTorch eager."""
    if per_sample:
        parts = [eager_run(tzoo, zm, model, x[i:i + 1], False) for i in range(len(x))]
        outs = np.concatenate([p[0] for p in parts])
        counts = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        steps = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
        return outs, counts, steps
    n, T = len(x), zm.timesteps
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(name, out.detach()))
             for name, m in tzoo.neuron_layers(model)]
    try:
        outs = zm.torch_outputs(model, x)
    finally:
        for h in hooks:
            h.remove()
    counts, steps = {}, {}
    for name, s in seen.items():
        per = s.shape[2:] if tuple(s.shape[:2]) == (T, n) else s.shape[1:]  # else (T * n, ...): flatten(0, 1)
        s = s.reshape((T, n) + tuple(per)).double().numpy()
        counts[name], steps[name] = s.sum(axis=0), s.reshape(T, n, -1).sum(axis=2).T
    return outs, counts, steps


