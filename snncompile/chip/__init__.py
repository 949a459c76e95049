"""Chip mapper and hardware cost model: does a graph fit on Loihi 1 / Loihi 2, on how many cores
and chips, how fast per step and at what energy per inference (issue 15).

Parts: ``profile`` (limits and costs as data, each with source and confidence), ``network``
(graph -> populations with their synapse groups), ``geometry`` (who feeds whom, per core),
``mapper`` (the cut into cores), ``cost`` (time and energy from measured activity),
``report`` (json / md / html).
"""
from snncompile.chip.mapper import ChipMap, map_graph
from snncompile.chip.profile import ChipProfile, load_profile

__all__ = ["ChipMap", "map_graph", "ChipProfile", "load_profile"]
