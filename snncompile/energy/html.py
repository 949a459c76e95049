"""A self-contained HTML page for an EnergyReport: tables plus matplotlib plots inlined as
base64 PNG (no network, no scripts), so the file can be mailed or archived as is."""
from __future__ import annotations

import base64
import html as _html
import io

from snncompile.energy.render import LAYER_COLUMNS, fmt_energy, layer_cells, summary_rows

_PARTS_COLORS = {"synops": "#1f77b4", "macs": "#ff7f0e", "neurons": "#2ca02c",
                 "spikes": "#d62728", "memory": "#9467bd", "masks": "#8c564b",
                 "reductions": "#e377c2", "scales": "#7f7f7f"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(report) -> dict[str, str]:
    """Base64 PNGs by id: firing rates, SOPs/MACs, energy breakdown, firing rate over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers
    neurons = [la for la in layers if la.role == "neuron"]
    synapses = [la for la in layers if la.role != "neuron"]
    out = {}
    height = lambda n: 1.2 + 0.35 * max(n, 1)  # noqa: E731
    label = lambda la: f"{la.name} ({la.kind})"  # noqa: E731

    fig, ax = plt.subplots(figsize=(7, height(len(neurons))))
    ax.barh([label(la) for la in neurons], [100 * la.firing_rate for la in neurons], color="#2ca02c")
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (% of neurons per step)")
    ax.set_title("Firing rate per neuron layer")
    out["firing_rates"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, height(len(synapses))))
    names = [label(la) for la in synapses]
    ax.barh(names, [la.synops_per_sample for la in synapses], color="#1f77b4", label="SOPs")
    ax.barh(names, [la.macs_per_sample for la in synapses], left=[la.synops_per_sample for la in synapses],
            color="#ff7f0e", label="MACs")
    if any(la.op_class for la in synapses):
        ax.barh(names, [la.ops_per_sample for la in synapses],
                left=[la.synops_per_sample + la.macs_per_sample for la in synapses], color="#8c564b",
                label="mask/reduce/scale ops")
    ax.invert_yaxis()
    ax.set_xlabel("operations per sample")
    ax.set_title(f"Operations per layer ({report.convention['name']} convention)")
    ax.legend(loc="lower right")
    out["synops"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, height(len(layers))))
    left = [0.0] * len(layers)
    for part, color in _PARTS_COLORS.items():
        vals = [1e9 * la.energy_breakdown_j.get(part, 0.0) for la in layers]
        if any(vals):
            ax.barh([label(la) for la in layers], vals, left=left, color=color, label=part)
            left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("energy per sample (nJ)")
    ax.set_title(f"Energy breakdown ({report.energy_model['name']})")
    ax.legend(loc="lower right")
    out["energy"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for la in neurons:
        if la.firing_rate_per_step:
            ax.plot(range(len(la.firing_rate_per_step)), [100 * r for r in la.firing_rate_per_step],
                    marker="o", label=la.name)
    ax.set_xlabel("time step")
    ax.set_ylabel("firing rate (%)")
    ax.set_ylim(bottom=0)
    ax.set_title("Firing rate over time")
    if neurons:
        ax.legend(fontsize="small")
    out["rate_over_time"] = _png(fig)
    return out


def _table(header, rows) -> str:
    e = _html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chip_section(report) -> str:
    """The chip map and cost (``energy --chip``), with its core-map picture; empty without."""
    if report.chip is None:
        return ""
    from snncompile.chip.report import html_section
    return html_section(report.chip)


def html(report) -> str:
    e = _html.escape
    imgs = plots(report)
    figure = lambda key, alt: (f'<figure><img id="plot-{key}" alt="{e(alt)}" '  # noqa: E731
                               f'src="data:image/png;base64,{imgs[key]}"></figure>')
    m = report.energy_model
    parts = [(k, fmt_energy(v)) for k, v in report.summary["energy_breakdown_j"].items()]
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Energy report: {e(report.graph)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eee; }}
td:first-child {{ white-space: nowrap; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} img {{ max-width: 520px; }}
.convention {{ background: #f6f6e8; padding: 0.6em; border-left: 4px solid #cc9; }}
</style></head><body>
<h1>Energy report: {e(report.graph)}</h1>
<p class="convention"><b>Convention:</b> {e(report.convention['description'])}<br>
<b>Energy model:</b> <code>{e(m['name'])}</code>: {e(m['description'])}. Source: {e(m['source'])}.</p>
<h2>Summary</h2>
{_table(("quantity", "value"), summary_rows(report))}
<h2>Plots</h2>
<div class="plots">
{figure("firing_rates", "firing rate per neuron layer")}
{figure("synops", "synaptic operations per layer")}
{figure("energy", "energy breakdown per layer")}
{figure("rate_over_time", "firing rate over time")}
</div>
<h2>Energy breakdown (per sample)</h2>
{_table(("part", "energy"), parts)}
<h2>Layers (per sample)</h2>
{_table(LAYER_COLUMNS, [layer_cells(la) for la in report.layers])}
{_chip_section(report)}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""
