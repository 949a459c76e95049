"""The chip report: a plain dict (the ``--json`` schema), and Markdown / HTML renderings of it.

Every rendering reads only the dict, so the energy report can carry the same section
(``snncompile energy --chip``) and draw the same core map. Schema (issue 15, more fields fine)::

    {"chip", "chips", "cores",
     "layers": [{"name", "neurons", "cores", "binding_limit", "role", "label", "chips"}],
     "cores_detail": [{"chip", "core", "layer", "neurons": [start, stop], "input_axons",
                       "output_axons", "synapse_bits", "synapse_units", "binding_limit",
                       "utilisation", "global_core"}],
     "inter_chip_axons", "profile": {"name", "description", "fields": {...}}, "notes",
     "cost": {...} (with activity: time per step, energy per inference; see chip.cost)}
"""
from __future__ import annotations

import base64
import html as _html
import io
import json

from snncompile.chip.mapper import LIMITS, ChipMap

SCHEMA = "snncompile.chip/1"
LIMIT_NAMES = {r: words for r, (_, words) in LIMITS.items()}


def map_dict(cmap: ChipMap, cost=None) -> dict:
    p = cmap.profile
    per_chip = int(p.cores_per_chip)
    out = {
        "schema": SCHEMA, "graph": cmap.network.name, "chip": p.name, "chips": cmap.chips,
        "cores": len(cmap.cores),
        "layers": [{"name": la.name, "neurons": la.neurons, "cores": len(la.cores),
                    "binding_limit": la.binding_limit, "role": la.role, "label": la.label,
                    "chips": la.chips} for la in cmap.layers],
        "cores_detail": [{"chip": c.chip, "core": c.core % per_chip, "global_core": c.core, "layer": c.layer,
                          "neurons": [c.start, c.stop], "input_axons": c.usage["input_axons"],
                          "output_axons": c.usage["output_axons"],
                          "synapse_bits": c.usage["synapse_units"] * int(p.synapse_unit_bits),
                          "synapse_units": c.usage["synapse_units"], "binding_limit": c.binding_limit,
                          "utilisation": c.utilisation} for c in cmap.cores],
        "limits": {r: getattr(p, f) for r, (f, _) in LIMITS.items()},
        "inter_chip_axons": cmap.inter_chip_axons,
        "profile": p.as_dict(),
        "notes": list(cmap.notes),
    }
    if cost is not None:
        out["cost"] = cost.as_dict()
    return out


def to_json(d: dict) -> str:
    return json.dumps(d, indent=2)


def _fmt_s(s) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.4g} {unit}"
    return f"{s / 1e-9:.4g} ns"


def summary_rows(d: dict) -> list[tuple[str, str]]:
    from snncompile.energy.render import fmt_energy
    rows = [("chip", f"{d['chip']}: {d['profile']['description']}"),
            ("chips", f"{d['chips']:,}"), ("cores", f"{d['cores']:,}"),
            ("inter-chip axons", f"{d['inter_chip_axons']:,}")]
    c = d.get("cost")
    if c:
        rows += [("activity", c["activity"]),
                 ("time per step", f"{_fmt_s(c['time_per_step_s'])} (slowest core {_fmt_s(c['slowest_core_s'])}, "
                                   f"barrier {_fmt_s(c['barrier_s'])}, inter-chip {_fmt_s(c['chip_hop_s'])})"),
                 ("latency per inference", f"{_fmt_s(c['latency_per_inference_s'])} ({c['timesteps']} steps, "
                                           f"{c['inferences_per_s']:,.1f} inferences/s)"),
                 ("energy per inference", fmt_energy(c["energy_per_inference_j"])),
                 ("power", f"{c['power_w']:.4g} W"),
                 ("energy breakdown", ", ".join(f"{k} {fmt_energy(v)}" for k, v in c["energy_breakdown_j"].items()))]
    return rows


LAYER_COLUMNS = ("layer", "role", "synapses -> neurons", "neurons", "cores", "chips", "binding limit")


def layer_rows(d: dict) -> list[list[str]]:
    return [[la["name"], la["role"], la["label"], f"{la['neurons']:,}", f"{la['cores']:,}",
             ",".join(map(str, la["chips"])), LIMIT_NAMES[la["binding_limit"]]] for la in d["layers"]]


def profile_rows(d: dict) -> list[list[str]]:
    return [[k, str(f["value"]), f["unit"], f["confidence"], f["source"]] for k, f in d["profile"]["fields"].items()]


def markdown_section(d: dict, level: int = 2) -> list[str]:
    from snncompile.energy.render import _md_table
    h = "#" * level
    out = [f"{h} Chip map: {d['chip']}", ""]
    out += _md_table(("quantity", "value"), summary_rows(d))
    out += ["", f"{h}# Layers on cores", ""] + _md_table(LAYER_COLUMNS, layer_rows(d))
    out += ["", f"{h}# Profile {d['profile']['name']}", ""]
    out += _md_table(("field", "value", "unit", "confidence", "source"), profile_rows(d))
    if d.get("notes") or d.get("cost", {}).get("notes"):
        out += ["", f"{h}# Chip notes", ""] + [f"- {n}" for n in d.get("notes", []) + d.get("cost", {}).get("notes", [])]
    return out


def markdown(d: dict) -> str:
    return "\n".join([f"# Chip report: {d['graph']}", ""] + markdown_section(d)) + "\n"


#: layer colours of the core map (cycled)
LAYER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
                 "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def core_map_png(d: dict) -> str:
    """Base64 PNG: every core of every chip as a cell, coloured by layer (left) and by the
    utilisation of its binding limit (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    per_chip = int(d["profile"]["fields"]["cores_per_chip"]["value"])
    cols = 16
    rows_per_chip = -(-per_chip // cols)
    chips = max(d["chips"], 1)
    layer_idx = {la["name"]: i for i, la in enumerate(d["layers"])}
    grid_layer = np.full((chips * rows_per_chip, cols), np.nan)
    grid_util = np.full((chips * rows_per_chip, cols), np.nan)
    for c in d["cores_detail"]:
        r, k = divmod(c["core"], cols)
        grid_layer[c["chip"] * rows_per_chip + r, k] = layer_idx[c["layer"]] % len(LAYER_COLOURS)
        grid_util[c["chip"] * rows_per_chip + r, k] = c["utilisation"]
    height = min(2.0 + 0.3 * grid_layer.shape[0], 30)
    fig, axes = plt.subplots(1, 2, figsize=(12, height))
    cmap_layers = matplotlib.colors.ListedColormap(LAYER_COLOURS)
    axes[0].imshow(grid_layer, cmap=cmap_layers, vmin=-0.5, vmax=len(LAYER_COLOURS) - 0.5, aspect="equal")
    axes[0].set_title(f"{d['cores']:,} cores on {d['chips']} {d['chip']} chip(s), by layer")
    handles = [Patch(color=LAYER_COLOURS[i % len(LAYER_COLOURS)], label=la["name"])
               for i, la in enumerate(d["layers"][:40])]
    fig.legend(handles=handles, fontsize="small", loc="upper center", ncol=4, bbox_to_anchor=(0.5, 0.0),
               title="layers (colours repeat after 20)" if len(d["layers"]) > len(LAYER_COLOURS) else "layers")
    im = axes[1].imshow(grid_util, cmap="viridis", vmin=0, vmax=1, aspect="equal")
    axes[1].set_title("utilisation of each core's binding limit")
    fig.colorbar(im, ax=axes[1], fraction=0.03)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([(i + 0.5) * rows_per_chip - 0.5 for i in range(chips)] if chips <= 40 else [])
        ax.set_yticklabels([f"chip {i}" for i in range(chips)] if chips <= 40 else [])
        for i in range(1, chips):
            ax.axhline(i * rows_per_chip - 0.5, color="black", lw=1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def html_section(d: dict) -> str:
    from snncompile.energy.html import _table
    e = _html.escape
    notes = "".join(f"<li>{e(n)}</li>" for n in d.get("notes", []) + d.get("cost", {}).get("notes", []))
    return f"""<h2>Chip map: {e(d['chip'])}</h2>
{_table(("quantity", "value"), summary_rows(d))}
<figure><img id="plot-core_map" alt="core map: cores coloured by layer and by utilisation"
src="data:image/png;base64,{core_map_png(d)}"></figure>
<h3>Layers on cores</h3>
{_table(LAYER_COLUMNS, layer_rows(d))}
<h3>Profile {e(d['profile']['name'])}</h3>
{_table(("field", "value", "unit", "confidence", "source"), profile_rows(d))}
<ul>{notes}</ul>
"""


def html(d: dict) -> str:
    e = _html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Chip report: {e(d['graph'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eee; }}
figure {{ margin: 0; }} img {{ max-width: 1000px; }}
</style></head><body>
<h1>Chip report: {e(d['graph'])}</h1>
{html_section(d)}
</body></html>
"""


FORMATS = {".json": to_json, ".md": markdown, ".html": html}


def chip_activity(cmap, graph, result, x):
    """(Activity, note or None) of ``result`` (a recorded run of ``graph`` on ``x``) for ``cmap``.

    A backend that did not record every population the chip needs (Lava may record only some
    nodes) is replaced by the emulator (fixed) or the reference (float) on the same inputs, and
    the note says so."""
    from snncompile.chip.cost import activity_from_run

    missing = [p.name for p in cmap.network.populations
               if p.role not in ("readout", "products") and p.name not in result.layer_counts]
    note = None
    if missing:
        from snncompile.targets import run
        fallback = "emulator" if result.precision == "fixed" else "reference"
        note = (f"the {result.backend} run recorded no counts for '{missing[0]}'; the chip activity is "
                f"counted on the {fallback} backend ({result.precision}) on the same inputs")
        result = run(graph, x, steps=int(result.outputs.shape[1]), backend=fallback, precision=result.precision,
                     record=True)
    return activity_from_run(cmap, result, x), note


def section_from_activity(cmap, activity, notes=()) -> dict:
    """The chip section of a report: the map of ``cmap`` costed with ``activity``."""
    from snncompile.chip.cost import estimate

    cost = estimate(cmap, activity)
    cost.notes.extend(n for n in dict.fromkeys(notes) if n)
    return map_dict(cmap, cost)


def chip_section(graph, result, x, chip) -> dict:
    """Map ``graph`` on ``chip`` and cost it with the counts of ``result`` (a recorded run on ``x``)."""
    from snncompile.chip.mapper import map_graph

    cmap = map_graph(graph, chip)
    activity, note = chip_activity(cmap, graph, result, x)
    return section_from_activity(cmap, activity, [note])
