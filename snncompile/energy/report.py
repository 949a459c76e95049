"""The energy report: per-layer rows, a summary, the convention and constants used.

JSON schema (``schema: "snncompile.energy/1"``), all counts *per sample* (mean over the
data set), energies in joules:

* ``summary``: ``n_samples``, ``timesteps``, ``backend``, ``precision``, ``counts_from``,
  ``convention``, ``energy_model``, ``synops_per_sample``, ``macs_per_sample``,
  ``neuron_updates_per_sample``, ``spikes_per_sample``, ``mean_firing_rate`` (spikes /
  (neurons x T)), ``synops_per_synapse``, ``energy_per_sample_j``, ``energy_breakdown_j``
  (``synops``, ``macs``, ``neurons``, ``spikes``, ``memory``, ``masks``, ``reductions``,
  ``scales``), ``spike_synops_per_sample`` (SOPs of layers with a spike-train input: the
  scope of SpikingJelly's ``SynOpCounter``), ``count_synops_per_sample`` (SOPs of layers fed
  integer spike sums, which SynOpCounter counts as 0), ``ops_per_sample_by_class``
  (``mask``, ``reduce``, ``scale``: operations that are neither SOPs nor MACs), ``ann_macs_per_sample``,
  ``ann_acs_per_sample``, ``ann_energy_per_sample_j``, ``snn_ann_energy_ratio``.
* ``convention``: ``name``, ``first_layer``, ``nonbinary``, ``description``.
* ``energy_model``: the constants in pJ (``mac_pj``, ``ac_pj``, ``neuron_update_pj``,
  ``spike_pj``, ``memory``), ``source``, ``notes``.
* ``layers``: one row per synapse layer, neuron population and operation (MatMul, Mul,
  ReduceSum, Scale), in graph order: ``name``, ``kind``, ``role`` (``synapse`` | ``neuron`` |
  ``operation``), ``source`` (input node; operands joined by ``, ``), ``input_kind`` (binary |
  count | real; operands joined by `` x ``), ``input_events_per_sample``,
  ``synops_per_sample``, ``macs_per_sample``, ``dense_ops_per_step`` (FL),
  ``synapses`` (real synapses), ``ops_per_sample`` and ``op_class`` (mask | reduce | scale),
  ``ann_macs_per_sample``, ``ann_acs_per_sample``,
  ``neuron_updates_per_sample``, ``spikes_per_sample``, ``firing_rate`` (a synapse row:
  the rate of its *input* spikes, the ``fr`` of the papers, null for real input; a neuron
  row: its own output rate), ``firing_rate_per_step`` (neuron rows, length T),
  ``energy_breakdown_j``, ``energy_per_sample_j``, ``ann_energy_per_sample_j``.
* ``notes``: what the numbers leave out or where they came from.
* ``chip`` (only with ``snncompile energy --chip``): the chip map and its cost from the same
  run's counts, in the schema of ``snncompile.chip.report`` (cores, chips, binding limits,
  time per step, energy per inference on that chip).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

SCHEMA = "snncompile.energy/1"


@dataclass
class LayerReport:
    name: str
    kind: str
    role: str
    source: Optional[str] = None
    input_kind: Optional[str] = None
    input_events_per_sample: Optional[float] = None
    synops_per_sample: float = 0.0
    macs_per_sample: float = 0.0
    dense_ops_per_step: int = 0
    synapses: int = 0
    ops_per_sample: float = 0.0
    op_class: Optional[str] = None
    ann_macs_per_sample: float = 0.0
    ann_acs_per_sample: float = 0.0
    neuron_updates_per_sample: float = 0.0
    spikes_per_sample: float = 0.0
    firing_rate: Optional[float] = None
    firing_rate_per_step: list = field(default_factory=list)
    energy_breakdown_j: dict = field(default_factory=dict)
    energy_per_sample_j: float = 0.0
    ann_energy_per_sample_j: float = 0.0


@dataclass
class EnergyReport:
    graph: str
    summary: dict
    convention: dict
    energy_model: dict
    layers: list[LayerReport]
    notes: list[str] = field(default_factory=list)
    #: chip map + cost (``snncompile.chip.report.map_dict``), when asked for with ``--chip``
    chip: Optional[dict] = None

    def to_dict(self) -> dict:
        out = {"schema": SCHEMA, "graph": self.graph, "summary": self.summary,
               "convention": self.convention, "energy_model": self.energy_model,
               "layers": [asdict(layer) for layer in self.layers], "notes": list(self.notes)}
        if self.chip is not None:
            out["chip"] = self.chip
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        from snncompile.energy.render import markdown
        return markdown(self)

    def to_html(self) -> str:
        from snncompile.energy.html import html
        return html(self)

    def summary_table(self) -> str:
        from snncompile.energy.render import terminal_summary
        return terminal_summary(self)
