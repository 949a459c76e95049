"""Energy and synaptic-operation estimates that state their conventions (energy.md).

``analyze(graph, result, convention="exact", energy_model="horowitz45", x=...)`` turns a
run recorded with ``record=True`` into an :class:`EnergyReport` (``.to_json()``,
``.to_markdown()``, ``.to_html()``). Parts: ``counts`` (facts of the run),
``conventions`` (exact vs rate formula), ``models`` (pJ per op), ``report`` / ``render`` /
``html`` (outputs).
"""
from snncompile.energy.analysis import analyze, build_report, resolve_model
from snncompile.energy.conventions import Convention
from snncompile.energy.counts import RunCounts, count_run, data_kind, fanout_map
from snncompile.energy.models import MODELS, EnergyModel, MemoryModel, get_model, load_constants
from snncompile.energy.report import EnergyReport, LayerReport

__all__ = ["analyze", "build_report", "resolve_model", "Convention", "RunCounts", "count_run",
           "data_kind", "fanout_map", "MODELS", "EnergyModel", "MemoryModel", "get_model",
           "load_constants", "EnergyReport", "LayerReport"]
