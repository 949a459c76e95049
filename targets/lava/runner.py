"""Run a built Lava network once and read its results back; always stop the runtime."""
from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.targets.base import RunResult, prepare_inputs
from snncompile.targets.lava import limits
from snncompile.targets.lava import params as prm
from snncompile.targets.lava import size
from snncompile.targets.lava.builder import LavaNet, build
from snncompile.targets.lava.plan import plan

TAGS = {"float": "floating_pt", "fixed": "fixed_pt"}
#: Signals after which the workers are stopped (the CLI turns SIGTERM/SIGHUP into a
#: KeyboardInterrupt subclass; see snncompile.commands._common.stop_on_signals).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Timings:
    """Seconds spent in each phase of the last run (for benchmarks)."""

    build: float = 0.0
    run: float = 0.0       # compile + spawn + all steps (Lava's run() call)
    readback: float = 0.0
    steps: int = 0
    processes: int = 0
    extra: dict = field(default_factory=dict)


#: Timings of the most recent ``run`` in this process.
last_timings = Timings()


@contextmanager
def quiet_lava_warnings():
    """Hide numpy RuntimeWarnings raised inside Lava's own code (e.g. ``inf * 0`` in its
    LIF model, printed once per worker): Lava's internals, not the user's to act on.
    Lava forks its workers inside this block, so they inherit the filter. Warnings from
    our own processes and from snncompile still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"lava\.")
        yield


def execute(net: LavaNet, precision: str = "float", graph_name: str = "graph") -> None:
    """Compile and run ``net`` for its steps. A Lava failure or an interrupt stops the
    runtime (no orphan worker processes) and surfaces as one clear error."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from snncompile.targets.lava.procs.conv import CONV_MODELS

    cfg = Loihi2SimCfg(select_tag=TAGS[precision], exception_proc_model_map=CONV_MODELS[precision])
    ok = False
    # The watchdog wakes a blocked run with SIGINT, which only the main thread receives.
    in_main = threading.current_thread() is threading.main_thread()
    watchdog = _Watchdog(net) if in_main else None
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS} if in_main else None
    if in_main:
        _resource_tracker_ignoring_hangup()
        signal.signal(signal.SIGINT, _parent_only_interrupt(os.getpid()))
    try:
        if watchdog:
            watchdog.start()
        net.source.run(condition=RunSteps(num_steps=net.num_steps), run_cfg=cfg)
        ok = True
    except KeyboardInterrupt:
        if in_main:  # no second signal while the workers are being stopped
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        if watchdog is None or watchdog.errors is None or "KeyboardInterrupt" in watchdog.errors:
            raise
        raise SnnCompileError(f"Lava run of graph '{graph_name}' failed: {watchdog.errors}") from None
    except SnnCompileError:
        raise
    except Exception as exc:  # Lava raises plain Exceptions from its workers and compiler
        detail = _worker_errors(net) or f"{type(exc).__name__}: {exc}"
        raise SnnCompileError(f"Lava run of graph '{graph_name}' failed: {detail}") from exc
    finally:
        if watchdog:
            watchdog.halt()
        if ok:
            net.source.stop()
        else:
            _kill(net)
        if in_main:
            for sig, handler in previous.items():
                if handler is not None:   # None: set outside Python, cannot be restored
                    signal.signal(sig, handler)


def _resource_tracker_ignoring_hangup() -> None:
    """multiprocessing's resource tracker (a fresh interpreter, started on first use of
    shared memory) ignores SIGINT and SIGTERM but not SIGHUP: a hang-up of the whole
    process group would kill it (a warning on stderr, shared memory left behind). Start
    it now with SIGHUP ignored, which the new process inherits."""
    from multiprocessing import resource_tracker

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, old)


def _parent_only_interrupt(parent_pid: int):
    """A SIGINT handler the forked Lava workers inherit: Ctrl-C reaches the whole process
    group, but only the parent raises KeyboardInterrupt (and then stops the workers);
    the workers ignore it instead of dying mid-message with a traceback each."""

    def handler(signum, frame):
        if os.getpid() == parent_pid:
            raise KeyboardInterrupt

    return handler


class _Watchdog(threading.Thread):
    """Lava's runtime never notices a worker that died: the healthy workers and the
    runtime wait forever for its messages. While the run lasts no worker may exit, so
    the first one that does means failure: note its error, terminate the others and
    interrupt the main thread, which turns it into an SnnCompileError."""

    def __init__(self, net: LavaNet):
        super().__init__(daemon=True, name="snncompile-lava-watchdog")
        self.net, self.done, self.errors = net, threading.Event(), None

    def run(self):
        while not self.done.wait(0.05):
            if self.errors is not None:
                return
            infra = getattr(getattr(self.net.source, "runtime", None), "_messaging_infrastructure", None)
            actors = list(getattr(infra, "actors", []) or [])
            dead = [a for a in actors if not a._is_done and a.exitcode is not None]
            if dead:
                self.errors = "; ".join(_actor_error(a) for a in dead)
                for a in actors:
                    if not a._is_done and a.exitcode is None:
                        a.kill()
                # A real signal: a plain interrupt_main() cannot wake a blocked lock wait.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return

    def halt(self):
        self.done.set()
        self.join()


def _actor_error(actor) -> str:
    exc = actor.exception
    if exc:
        return exc[1].strip().splitlines()[-1]
    return f"a Lava worker process exited with status {actor.exitcode}"


def _worker_errors(net: LavaNet) -> str:
    """The last line of each worker's traceback (Lava only logs them at INFO level)."""
    runtime = getattr(net.source, "runtime", None)
    infra = getattr(runtime, "_messaging_infrastructure", None)
    lines = []
    for actor in getattr(infra, "actors", []):
        exc = actor._exception if actor._is_done else None
        if exc:
            lines.append(exc[1].strip().splitlines()[-1])
    return "; ".join(lines)


def _kill(net: LavaNet) -> None:
    """After a failure or an interrupt Lava's own stop() waits forever for dead workers:
    kill the workers we started (SIGKILL: under the CLI they ignore SIGTERM, see
    stop_on_signals), then free Lava's shared memory through its manager."""
    import multiprocessing as mp

    from lava.magma.runtime.message_infrastructure.multiprocessing import SystemProcess

    runtime = getattr(net.source, "runtime", None)
    infra = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(infra, "actors", None) or [])
    # A stop signal can unwind Lava's start-up before the runtime knows all its workers (or
    # before it exists): every Lava worker that is still a child of ours goes the same way.
    strays = [c for c in mp.active_children() if isinstance(c, SystemProcess) and c not in actors]
    for actor in actors + strays:
        if actor._is_done:
            continue
        if actor.is_alive():
            actor.kill()
        mp.Process.join(actor, timeout=5)
        if actor.exitcode is None:   # not reaped yet (a loaded machine): SIGKILL cannot be ignored
            mp.Process.join(actor, timeout=10)
        # Killed: Lava's own join(), which multiprocessing calls again at interpreter exit, would
        # only fail on it ("Cannot close a process while it is still running") and print a traceback.
        actor._is_done = True
    if infra is not None:
        try:
            infra._smm.shutdown()
        except Exception:  # already shut down
            pass
        try:
            runtime._watchdog_manager.stop()
        except Exception:
            pass
        runtime._is_started = runtime._is_running = False
    # Everything is stopped: Lava's AbstractProcess.__del__ (at garbage collection, or at
    # interpreter exit) would stop the runtime again and fail on the closed workers.
    for proc in net.processes:
        proc._runtime = None


def _static_or_train(graph, x, steps):
    """(x, T, static): keep a static input as (N, *shape) so it is not copied T times."""
    x = np.asarray(x)
    if x.ndim >= 1 and x.shape[1:] == tuple(graph.input.shape):
        _, T = prepare_inputs(graph, x[:1], steps)  # validates dtype, finiteness, steps
        if not np.all(np.isfinite(x)):
            raise SnnCompileError("input contains NaN or Inf values")
        return np.ascontiguousarray(x, dtype=np.float64), T, True
    xs, T = prepare_inputs(graph, x, steps)
    return xs, T, False


def run(graph, x, steps: Optional[int] = None, precision: str = "float",
        record: bool = False, max_units: Optional[int] = None,
        max_synapses: Optional[int] = None) -> RunResult:
    """Run ``graph`` on ``x`` ((N, T, *shape) trains or (N, *shape) static) in Lava.

    ``record``: True records the spike counts of every node, or give the node names to record
    (each costs one more Lava process, but a Reshape/Permute: its input's counts, re-indexed).

    A graph whose mapping needs more than the budget (``size.py``: ``max_units``,
    ``max_synapses``, else the environment or the defaults) is refused before anything is built."""
    global last_timings
    graph = prm.prepare_graph(graph, precision)
    limits.check_graph(graph, precision)
    size.check_budget(graph, size.LavaBudget.resolve(max_units, max_synapses))
    xs, T, static = _static_or_train(graph, x, steps)
    if xs.shape[0] == 0:
        raise SnnCompileError(f"graph '{graph.name}': no input samples to run")
    the_plan = plan(graph, precision)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snncompile-lava-") as folder, quiet_lava_warnings():
        net = build(graph, xs, static, T, folder, record=record, the_plan=the_plan, precision=precision)
        t1 = time.perf_counter()
        execute(net, precision, graph.name)
        t2 = time.perf_counter()
        result = _read_back(net, graph, precision, xs.shape[0], T)
        t3 = time.perf_counter()
    last_timings = Timings(build=t1 - t0, run=t2 - t1, readback=t3 - t2, steps=net.num_steps,
                           processes=net.process_count)
    return result


def _read_back(net: LavaNet, graph, precision: str, n: int, T: int) -> RunResult:
    # the collectors keep their values in IR (C) order already
    with np.load(net.output) as f:
        outputs = f["values"]
    layer_counts, layer_steps = {}, {}
    for name, (path, layout) in net.records.items():
        if path == "derived":   # a Reshape / Permute: its input's counts, re-indexed (same step sums)
            node, src = layout, graph.inputs_of(name)[0]
            counts = layer_counts[src]
            layer_counts[name] = (counts.reshape((n,) + tuple(node.shape)) if isinstance(node, ir.Reshape)
                                  else counts.transpose((0,) + tuple(p + 1 for p in node.perm)))
            layer_steps[name] = layer_steps[src].copy()
            continue
        with np.load(path) as f:
            counts = f["counts"]
            layer_counts[name] = counts.reshape((n,) + tuple(graph.shape(name)))
            layer_steps[name] = f["step_sums"].copy()
    return RunResult(outputs=outputs.reshape(n, T, -1), readout=graph.output.mode, backend="lava",
                     precision=precision, layer_counts=layer_counts, layer_steps=layer_steps)
