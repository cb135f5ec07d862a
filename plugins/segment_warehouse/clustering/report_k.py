"""HTML for the segment report: every candidate k with its selection scores and stability.

Kept beside the rule (model.select_k) so the wording cannot drift from what the rule
does; segment_report.py embeds :func:`k_selection_section`.
"""

from __future__ import annotations

import html
import math
from typing import Any

from segment_warehouse.clustering.model import K_HYSTERESIS
from segment_warehouse.clustering.space import NO_ACTIVITY_SEGMENT

_COLUMNS = (
    ("score", "score", "mean of the three criteria below, each scaled 0..1 over the candidates"),
    ("silhouette", "silhouette", "higher = better separated (hash sample)"),
    ("calinski_harabasz", "Calinski-Harabasz", "higher = better"),
    ("davies_bouldin", "Davies-Bouldin", "lower = better"),
    ("stability", "split-half stability", "ARI of two fits on disjoint halves; 1 = reproducible"),
)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def k_selection_section(candidates: list[dict[str, Any]]) -> str:
    """A table of the run's k candidates (runs before segkm-3 only have silhouette)."""
    cols = [c for c in _COLUMNS if any(c[0] in cand for cand in candidates)]
    head = "".join(
        f"<th style='text-align:right' title='{html.escape(tip)}'>{html.escape(label)}</th>"
        for _, label, tip in cols
    )
    rows = []
    for cand in candidates:
        style = " style='background:#fde8e8;font-weight:600'" if cand.get("chosen") else ""
        cells = "".join(f"<td class='n'>{_cell(cand.get(key))}</td>" for key, _, _ in cols)
        mark = "chosen" if cand.get("chosen") else ""
        rows.append(f"<tr{style}><td class='n'>{cand['k']}</td>{cells}<td>{mark}</td></tr>")
    return (
        "<h2>Choice of k</h2><table><tr><th class='n'>k</th>" + head + "<th></th></tr>"
        + "".join(rows)
        + "</table><p class='note'>k is the candidate with the highest score; the previous "
        f"run's k is kept while its score is within {K_HYSTERESIS:g} of the best. k counts "
        f"k-means segments; customers without any activity are the fixed segment "
        f"{NO_ACTIVITY_SEGMENT['segment_id']} \u00b7 {html.escape(NO_ACTIVITY_SEGMENT['name'])} "
        "on top. Stability is reported, not used by the rule.</p>"
    )
