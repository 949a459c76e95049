"""Make lava-nc 0.10.0 importable on Python 3.11, without touching site-packages.

lava-nc declares Python <3.11 and has exactly one 3.11 incompatibility:
``lava/magma/compiler/var_model.py`` uses instances of the non-frozen dataclass
``ByteEncoder`` as field defaults, which Python 3.11 rejects (bpo-44674) with
``ValueError: mutable default``. Making ``ByteEncoder`` frozen fixes it.

Instead of asking users to edit the installed file, :func:`install` puts an import
hook in front of the normal finder that loads that one module from its original
source with the decorator rewritten in memory. The hook is installed by
``snncompile.targets.lava`` before anything of Lava is imported; Lava's runtime
forks its workers, so they inherit the patched module.

``python -m snncompile.lava_compat`` checks the installation and says what is wrong.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import signal
import sys

from snncompile.errors import SnnCompileError

TARGET_MODULE = "lava.magma.compiler.var_model"
_RUNTIME = "lava.magma.runtime.message_infrastructure.multiprocessing"
_BROKEN = "@dataclass\nclass ByteEncoder:"
_FIXED = "@dataclass(frozen=True)\nclass ByteEncoder:"


def needs_fix() -> bool:
    return sys.version_info >= (3, 11)


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads var_model.py with ByteEncoder made frozen (hashable)."""

    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        if _BROKEN in source:
            source = source.replace(_BROKEN, _FIXED, 1)
        elif _FIXED not in source:
            raise SnnCompileError(
                f"snncompile cannot make lava-nc importable on Python "
                f"{sys.version_info.major}.{sys.version_info.minor}: {self.path} no longer "
                f"contains the 'ByteEncoder' dataclass this fix expects. Install lava-nc==0.10.0 "
                f"(pip install --ignore-requires-python lava-nc==0.10.0 -c constraints.txt)."
            )
        return compile(source, self.path, "exec", dont_inherit=True)


class _LavaVarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchedSourceLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Make Lava importable here (idempotent). Call before importing any ``lava`` module.

    Installs the import hook (Python >= 3.11) and imports Lava's multiprocessing runtime
    with its start-method call let through (see :func:`_import_runtime_multiprocessing`).
    """
    if needs_fix() and not any(isinstance(f, _LavaVarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LavaVarModelFinder())
    _import_runtime_multiprocessing()
    _tolerate_reaped_workers()
    _search_proc_models_once_per_class()


def _search_proc_models_once_per_class() -> None:
    """Lava's compiler looks for the ProcessModels of every process *instance* by importing
    every module in the folder of its class, again for each instance: a third of the start-up
    of a 100-process network (4 of 12 s on the spiking-transformer zoo). The answer depends
    only on the class, so keep it per class for this interpreter (idempotent)."""
    if importlib.util.find_spec("lava") is None:
        return
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

    search = ProcGroupDiGraphs.__dict__["_find_proc_models"].__func__
    if getattr(search, "_snncompile", False):
        return
    found: dict = {}

    def search_once(proc):
        key = type(proc)
        if key not in found:
            found[key] = search(proc)
        return list(found[key])

    search_once._snncompile = True
    ProcGroupDiGraphs._find_proc_models = staticmethod(search_once)


def _tolerate_reaped_workers() -> None:
    """Lava's ``SystemProcess.join`` always closes the process object after joining. For a
    worker that was already killed and reaped (snncompile stops Lava's workers itself after a
    failure or a stop signal) ``Process.close()`` then raises "Cannot close a process while it
    is still running" or "process object is closed", and Lava's teardown at interpreter exit
    (``AbstractProcess.__del__``, multiprocessing's exit handler) prints one traceback per
    worker. Such a worker is gone: mark it done instead (idempotent)."""
    module = sys.modules.get(_RUNTIME)
    cls = getattr(module, "SystemProcess", None)
    if cls is None or getattr(cls.join, "_snncompile", False):
        return
    join = cls.join

    def tolerant_join(self):
        try:
            join(self)
        except ValueError:
            # Still "running" to multiprocessing: on a loaded machine a worker killed by a stop
            # signal may not be waited for yet (or was reaped elsewhere, so waitpid fails and
            # multiprocessing never learns its exit). Nothing may outlive the command: kill it
            # (harmless if it is gone) and wait a bounded time.
            if getattr(self, "_popen", None) is not None and self._popen.returncode is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self._popen.wait(10)
            self._is_done = True

    tolerant_join._snncompile = True
    cls.join = tolerant_join


def _import_runtime_multiprocessing() -> None:
    """Lava's runtime calls ``multiprocessing.set_start_method('fork')`` at import, which
    raises "context has already been set" once anything fixed the start method (torch.fx
    tracing, SpikingJelly's NIR export, snnTorch training). Lava needs 'fork' anyway (the
    Linux default), so import it here once with its call let through (``force=True``)."""
    import multiprocessing

    if _RUNTIME in sys.modules or importlib.util.find_spec("lava") is None:
        return
    original = multiprocessing.set_start_method
    multiprocessing.set_start_method = lambda method, force=False: original(method, force=True)
    try:
        importlib.import_module(_RUNTIME)
    finally:
        multiprocessing.set_start_method = original


def check() -> str:
    """Import Lava's LIF process through the hook; return a one-line status or raise."""
    install()
    if importlib.util.find_spec("lava") is None:
        raise SnnCompileError(
            "lava-nc is not installed. Run `make install` (it installs lava-nc==0.10.0 with "
            "--ignore-requires-python and the constraints in constraints.txt)."
        )
    try:
        import lava.magma.compiler.var_model  # noqa: F401
        import lava.proc.lif.process  # noqa: F401
    except ValueError as exc:  # the 3.11 dataclass error, if the hook did not apply
        raise SnnCompileError(
            f"lava-nc failed to import on Python {sys.version.split()[0]}: {exc}. The snncompile "
            f"import hook (snncompile.lava_compat) did not apply; was lava imported before "
            f"snncompile.targets.lava?"
        ) from exc
    from importlib.metadata import version

    how = "ByteEncoder made frozen in memory" if needs_fix() else "no fix needed"
    return f"lava-nc {version('lava-nc')} importable on Python {sys.version.split()[0]} ({how})"


if __name__ == "__main__":
    try:
        print(check())
    except SnnCompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
