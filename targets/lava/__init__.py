"""Lava target: the graph as Lava processes on Lava's CPU simulator (Loihi2SimCfg).

``run(graph, x, steps=None, precision="float", record=False) -> RunResult`` builds one
Lava network for all samples (run back to back, see ``builder``), runs it once, and
reads back compact results written by our collector processes. Results are on the
model's own time axis; Lava's pipeline latency stays inside this package.
"""
from snncompile import lava_compat

lava_compat.install()

from snncompile.targets.lava.runner import run  # noqa: E402

__all__ = ["run"]
