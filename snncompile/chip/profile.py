"""Chip profiles as data: every limit and cost a named field with its source and confidence.

Why data and not code: a number in a fit/energy estimate is only as good as its source, so
each one travels with it into every report. A profile is a JSON file
(``snncompile/chip/profiles/<name>.json``, or the user's own in the same format)::

    {"name": "...", "description": "...",
     "fields": {"neurons_per_core": {"value": 1024, "unit": "compartments",
                                      "confidence": "compiler-observed", "source": "..."}, ...}}

Every name in :data:`FIELDS` must be present; ``confidence`` is one of :data:`CONFIDENCE`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snncompile.errors import SnnCompileError

PROFILE_DIR = Path(__file__).with_name("profiles")
CONFIDENCE = ("pre-silicon", "measured", "compiler-observed", "assumption")

#: field name -> what it means (the README's profile table is this list).
FIELDS = {
    "cores_per_chip": "neuro-cores usable per chip",
    "cores_per_tile": "cores sharing a router tile (a spike between them makes no hop)",
    "mesh_tiles_x": "tiles per mesh row (sets hop distances)",
    "neurons_per_core": "neurons (compartments) per core",
    "input_axons_per_core": "input axons per core: one per distinct source neuron",
    "output_axons_per_core": "output axons per core: one per (neuron, destination core)",
    "synapse_memory_units": "synapse memory per core, in units of synapse_unit_bits",
    "synapse_unit_bits": "bits per synapse memory unit",
    "synapse_chunk_weights": "weights per stored chunk of one axon",
    "synapse_chunk_overhead_bits": "header bits per chunk",
    "weight_bits": "bits per stored weight",
    "sparse_index_bits_map": "index bits per conv weight: smallest entry >= log2(neurons on the core)",
    "conv_weight_sharing": "conv kernels stored once per core, one population axon per source channel "
                           "(else weights per input axon, one axon per source neuron)",
    "graded_spikes": "spikes carry values (a relay of currents is exact)",
    "synop_dense_pj": "energy per synaptic op of a dense synapse",
    "synop_conv_pj": "energy per synaptic op of a conv/pool synapse",
    "synop_ns": "time per synaptic op",
    "neuron_update_pj": "energy per neuron update",
    "neuron_update_ns": "time per neuron update",
    "spike_out_pj": "energy per spike generated",
    "message_pj": "energy per spike message to one destination core",
    "tile_hop_pj": "energy per tile hop of a message",
    "tile_hop_ns": "time per tile hop",
    "chip_hop_pj": "energy per message crossing chips",
    "chip_hop_ns": "time added per step when messages cross chips",
    "barrier_min_ns": "barrier synchronisation, one tile",
    "barrier_max_ns": "barrier synchronisation, all tiles of a chip",
    "static_w_per_chip": "static power per chip",
}


@dataclass(frozen=True)
class ProfileField:
    value: Any
    unit: str
    confidence: str
    source: str


@dataclass(frozen=True)
class ChipProfile:
    name: str
    description: str
    fields: dict
    path: str = ""

    def __getattr__(self, key):
        # Field values read as attributes: profile.neurons_per_core
        fields = object.__getattribute__(self, "fields")
        if key in fields:
            return fields[key].value
        raise AttributeError(key)

    @property
    def tiles_per_chip(self) -> int:
        return -(-self.cores_per_chip // self.cores_per_tile)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "fields": {k: vars(f) for k, f in self.fields.items()}}


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(spec) -> ChipProfile:
    """A built-in profile by name (``loihi1``, ``loihi1-sanafe``, ``loihi2``) or a JSON file path."""
    if isinstance(spec, ChipProfile):
        return spec
    path = PROFILE_DIR / f"{spec}.json"
    if not path.exists():
        path = Path(spec)
        if not path.exists():
            raise SnnCompileError(f"chip '{spec}': not a built-in profile ({', '.join(builtin_profiles())}) "
                                  f"and no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnnCompileError(f"chip profile '{path}': not readable JSON ({exc})") from None
    return parse_profile(data, str(path))


def parse_profile(data, where: str) -> ChipProfile:
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise SnnCompileError(f"chip profile '{where}': expected an object with 'name' and 'fields'")
    fields = {}
    for key in FIELDS:
        raw = data["fields"].get(key)
        if raw is None:
            raise SnnCompileError(f"chip profile '{where}': field '{key}' ({FIELDS[key]}) is missing")
        if not isinstance(raw, dict) or not {"value", "source", "confidence"} <= set(raw):
            raise SnnCompileError(f"chip profile '{where}': field '{key}' needs 'value', 'source' and 'confidence'")
        if raw["confidence"] not in CONFIDENCE:
            raise SnnCompileError(f"chip profile '{where}': field '{key}' has confidence "
                                  f"'{raw['confidence']}'; use one of {', '.join(CONFIDENCE)}")
        _check_value(where, key, raw["value"])
        fields[key] = ProfileField(raw["value"], str(raw.get("unit", "")), raw["confidence"], str(raw["source"]))
    unknown = sorted(set(data["fields"]) - set(FIELDS))
    if unknown:
        raise SnnCompileError(f"chip profile '{where}': unknown field(s) {', '.join(unknown)}")
    return ChipProfile(str(data.get("name", Path(where).stem)), str(data.get("description", "")), fields, where)


def _check_value(where, key, value):
    bad = lambda why: SnnCompileError(f"chip profile '{where}': field '{key}' {why}, got {value!r}")  # noqa: E731
    if key in ("graded_spikes", "conv_weight_sharing"):
        if not isinstance(value, bool):
            raise bad("must be true or false")
    elif key == "sparse_index_bits_map":
        if not (isinstance(value, list) and value and all(isinstance(v, int) and v >= 0 for v in value)
                and value == sorted(value)):
            raise bad("must be a sorted list of non-negative integers")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise bad("must be a non-negative number")
    elif key.endswith("_per_core") or key.endswith("_per_chip") and key != "static_w_per_chip" \
            or key in ("cores_per_tile", "mesh_tiles_x", "synapse_memory_units", "synapse_unit_bits",
                       "synapse_chunk_weights", "weight_bits"):
        if int(value) != value or value < 1:
            raise bad("must be a positive integer")
