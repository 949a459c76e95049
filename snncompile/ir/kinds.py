"""Which stage handles which node kind: one declared table per stage.

Every stage of the compiler (frontend, ONNX writer and reader, passes, quantizer, each
target, energy counts, NIR writer) declares one :class:`StageTable` in its own module.
Each kind of ``snncompile.ir.nodes.NODE_TYPES`` is, per stage, either *implemented*
(``@TABLE.implements(ir.Linear)``: the entry is the function or data the stage
dispatches on) or *refused* with a reason in plain words (``TABLE.refuse(ir.Add, "...")``).
Adding a node kind is one entry per stage; ``support_matrix()`` (and ``snncompile ops``)
shows the whole (kind x stage) matrix, and a test fails when a pair has no entry.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from snncompile.errors import SnnCompileError

#: Stage name -> the module that declares its table (imported by :func:`support_matrix`).
STAGE_MODULES: dict[str, str] = {
    "frontend": "snncompile.ir.stages.frontend",
    "onnx.write": "snncompile.ir.onnx_format",
    "onnx.read": "snncompile.ir.onnx_format",
    "passes": "snncompile.ir.stages.passes",
    "quantize": "snncompile.quantize.scales",
    "reference": "snncompile.targets.reference",
    "emulator.torch": "snncompile.targets.emulator.integer",
    "emulator.events": "snncompile.ir.stages.emulator_events",
    "lava.float": "snncompile.targets.lava.plan",
    "lava.fixed": "snncompile.targets.lava.plan",
    "energy": "snncompile.ir.stages.energy",
    "nir.write": "snncompile.interop.nir_write",
}
STAGES: tuple[str, ...] = tuple(STAGE_MODULES)

#: Backend columns of ``snncompile ops``: backend/precision -> the stage that runs it.
BACKENDS: dict[str, str] = {
    "reference float": "reference",
    "emulator float": "reference",
    "emulator fixed (torch)": "emulator.torch",
    "emulator fixed (events)": "emulator.events",
    "lava float": "lava.float",
    "lava fixed": "lava.fixed",
}

YES = "yes"
_TABLES: dict[str, "StageTable"] = {}


@dataclass(frozen=True)
class Refusal:
    """A named refusal: the stage does not handle the kind, for this reason."""

    why: str


@dataclass
class StageTable:
    """The kinds one stage handles: kind class -> entry (a function or data), or a Refusal.

    Declaring a second table for the same stage is an error (one table per stage)."""

    stage: str
    #: How error messages name the stage ("the Lava target"); default: the stage name.
    says: str = ""
    #: The error's reason for a kind with no entry, after ``says``.
    missing: str = "has no entry for this kind"
    entries: dict[type, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.stage not in STAGE_MODULES:
            raise ValueError(f"unknown stage {self.stage!r}; add it to STAGE_MODULES")
        if self.stage in _TABLES:
            raise ValueError(f"stage {self.stage!r} already has a table")
        _TABLES[self.stage] = self

    def implements(self, *kinds: type):
        """Decorator: ``fn`` is this stage's entry for ``kinds``."""
        def register(fn):
            self.add(fn, *kinds)
            return fn
        return register

    def add(self, entry: Any, *kinds: type) -> None:
        """Register a non-function entry (data the stage dispatches on) for ``kinds``."""
        for kind in kinds:
            if kind in self.entries:
                raise ValueError(f"stage {self.stage!r}: kind {kind.kind} declared twice")
            self.entries[kind] = entry

    def declare(self, *kinds: type) -> None:
        """Kinds the stage handles with dispatch still inline in its own code (no entry object)."""
        self.add(None, *kinds)

    def refuse(self, kind: type, why: str) -> None:
        """``kind`` is not handled by this stage; ``why`` completes "<says> <why>"."""
        self.add(Refusal(why), kind)

    def lookup(self, node) -> Any:
        """The entry for ``node``'s kind; raises SnnCompileError for a refusal or a missing entry."""
        entry = self.entries.get(type(node), _MISSING)
        if entry is _MISSING:
            raise SnnCompileError(f"node '{node.name}' ({node.kind}): {self.says or self.stage} "
                                  f"{self.missing} (no entry in the {self.stage} table, "
                                  f"{STAGE_MODULES[self.stage]})")
        if isinstance(entry, Refusal):
            raise SnnCompileError(f"node '{node.name}' ({node.kind}): {self.says or self.stage} "
                                  f"{entry.why}")
        return entry

    def handles(self, node) -> bool:
        """True when the stage implements ``node``'s kind (no refusal, an entry exists)."""
        entry = self.entries.get(type(node), _MISSING)
        return entry is not _MISSING and not isinstance(entry, Refusal)

    def status(self, kind: type) -> str:
        """"yes", "no: <says> <why>" for a refusal, or "" when the kind has no entry."""
        entry = self.entries.get(kind, _MISSING)
        if entry is _MISSING:
            return ""
        return f"no: {self.says or self.stage} {entry.why}" if isinstance(entry, Refusal) else YES


_MISSING = object()


def table(stage: str) -> StageTable:
    """The declared table of ``stage`` (imports its module)."""
    importlib.import_module(STAGE_MODULES[stage])
    return _TABLES[stage]


def support_matrix() -> dict[str, dict[str, str]]:
    """kind name -> stage -> "yes" / "no: <why>" / "" (no entry), for every kind and stage."""
    from snncompile.ir.nodes import NODE_TYPES

    tables = {stage: table(stage) for stage in STAGES}
    return {name: {stage: tables[stage].status(cls) for stage in STAGES}
            for name, cls in NODE_TYPES.items()}


def backend_matrix(matrix: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """kind name -> backend/precision -> status, from the stage matrix."""
    return {kind: {backend: row[stage] for backend, stage in BACKENDS.items()}
            for kind, row in matrix.items()}
