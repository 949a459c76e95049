"""Lava target: the graph as Lava processes on Lava's CPU simulator (Loihi2SimCfg).

``run(graph, x, steps=None, precision="float"|"fixed", record=False) -> RunResult``
builds one Lava network for all samples (run back to back, see ``builder``), runs it
once, and reads back compact results written by our collector processes. Results are on
the model's own time axis; Lava's pipeline latency stays inside this package.
"""
from snncompile import lava_compat

# The import hook and Lava's runtime (its 'fork' start method) before anything of Lava.
lava_compat.install()

from snncompile.targets.lava.runner import run  # noqa: E402

__all__ = ["run"]
