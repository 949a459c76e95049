"""Execution backends, all behind one interface: ``run(graph, inputs, steps) -> RunResult``.

Installed as ``snncompile.targets`` (see pyproject.toml ``package-dir``).
- ``reference``: float simulation of the IR, the meaning of the graph.
- ``emulator``: bit-exact Loihi fixed point (and float), batched.
- ``lava``: Lava processes on ``Loihi2SimCfg``.
"""
from snncompile.targets.base import BACKENDS, RunResult, get_backend, prepare_inputs, run

__all__ = ["BACKENDS", "RunResult", "get_backend", "prepare_inputs", "run"]
