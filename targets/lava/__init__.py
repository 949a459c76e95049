"""Lava target: the graph as Lava processes on Lava's CPU simulator (Loihi2SimCfg).

``run(graph, x, steps=None, precision="float"|"fixed", record=False) -> RunResult``
builds one Lava network for all samples (run back to back, see ``builder``), runs it
once, and reads back compact results written by our collector processes. Results are on
the model's own time axis; Lava's pipeline latency stays inside this package.
"""
import multiprocessing as _mp

from snncompile import lava_compat

lava_compat.install()


def _import_lava_runtime() -> None:
    """Lava's runtime calls ``multiprocessing.set_start_method('fork')`` at import, which
    fails ("context has already been set") when torch.fx tracing or training fixed the
    start method first. Lava needs 'fork' (the Linux default): let its one call through."""
    original = _mp.set_start_method
    _mp.set_start_method = lambda method, force=False: original(method, force=True)
    try:
        import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401
    finally:
        _mp.set_start_method = original


_import_lava_runtime()

from snncompile.targets.lava.runner import run  # noqa: E402

__all__ = ["run"]
