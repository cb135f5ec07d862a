"""The experiments page: forest plots of lift per segment, sizes, SRM, verdicts.

Static and self-contained (matplotlib PNGs inlined as base64), written to
``settings.experiment_reports_dir / "index.html"`` from the rows ``measure()``
just wrote, so the page and the table always agree. Every value from the
warehouse (experiment ids, segment names, verdicts) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: Airflow workers have no display

import matplotlib.pyplot as plt

from segment_warehouse.config import Settings, get_settings

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#666} table{border-collapse:collapse;margin:8px 0;font-size:13px;width:100%}
th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:right}
tr.vr td{padding-top:0;font-size:12px} tr:has(+ tr.vr) td{border-bottom:none}
th:first-child,td:first-child,td.v{text-align:left}
th{background:#f6f6f6} .warn{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px;
border-radius:4px;margin:8px 0} .ok{color:#1b7f3b} .bad{color:#b3261e}
.good{color:#1b7f3b;font-weight:600} .worse{color:#b3261e;font-weight:600}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dt{color:#666} dd{margin:0} .nw{white-space:nowrap}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value * 100:+.1f} %" if signed else f"{value * 100:.1f} %"


def _num(value: float | None, spec: str = "{:,.2f}") -> str:
    return "–" if value is None else spec.format(value)


def _interval_cell(estimate: float | None, low: float | None, high: float | None) -> str:
    if estimate is None or low is None or high is None:
        return "–"
    return (
        f"<span class='nw'>{_pct(estimate)}</span><br>"
        f"<span class='muted nw'>{_pct(low)} to {_pct(high)}</span>"
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    # fixed metadata so the same results give the same bytes
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _forest_plot(treatment_rows: list[dict[str, Any]]) -> str | None:
    """Lift with its 95 % interval per slice; CUPED interval drawn below when present."""
    rows = [r for r in treatment_rows if r["lift"] is not None and r["lift_ci_low"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.2))
    labels = []
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        significant = row["p_value_adjusted"] is not None and row["p_value_adjusted"] < 0.05
        color = (
            "#1b7f3b"
            if significant and row["lift"] > 0
            else ("#b3261e" if significant else "#444444")
        )
        lo, hi = row["lift_ci_low"] * 100, row["lift_ci_high"] * 100
        ax.plot([lo, hi], [y, y], color=color, lw=2)
        ax.plot([row["lift"] * 100], [y], "o", color=color, ms=6)
        if row["cuped_lift"] is not None and row["cuped_ci_low"] is not None:
            ax.plot(
                [row["cuped_ci_low"] * 100, row["cuped_ci_high"] * 100],
                [y - 0.25, y - 0.25],
                color=color,
                lw=1,
                alpha=0.55,
                ls="--",
            )
            ax.plot([row["cuped_lift"] * 100], [y - 0.25], "s", color=color, ms=3.5, alpha=0.55)
        labels.append(f"{row['segment']}  (n={row['customers_total']:,})")
    ax.axvline(0, color="#999999", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels[::-1])
    ax.set_ylim(-0.8, len(rows) - 0.4)
    ax.set_xlabel("relative lift in conversion rate, % (95 % CI; dashed: CUPED-adjusted)")
    ax.grid(axis="x", color="#eeeeee")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def _verdict_class(verdict: str) -> str:
    if "treatment better" in verdict:
        return "good"
    if "treatment worse" in verdict:
        return "worse"
    return ""


def _experiment_section(exp: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    eid = exp["experiment_id"]
    by_segment: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_segment.setdefault(row["segment"], {})[row["variant"]] = row
    treatment_rows = []
    for segment_rows in by_segment.values():
        t = dict(segment_rows["treatment"])
        t["customers_total"] = segment_rows["control"]["customers"] + t["customers"]
        treatment_rows.append(t)
    overall = by_segment.get("all", {}).get("treatment")
    out = [f"<h2 id='{_esc(eid)}'>{_esc(eid)}</h2>"]
    out.append(
        "<dl>"
        f"<dt>rule → content</dt><dd>{_esc(exp.get('rule_id'))} → {_esc(exp.get('content_id'))}"
        f" (control sees {_esc(exp.get('default_content_id'))}) in slot "
        f"{_esc(exp.get('slot_id'))}</dd>"
        f"<dt>running</dt><dd>{_esc(exp.get('start_date'))} – "
        f"{_esc(exp.get('end_date') or 'open')}</dd>"
        f"<dt>design</dt><dd>control share {float(exp['control_share']):.0%}, conversion window "
        f"{int(exp['window_days'])} days after assignment</dd>"
        "</dl>"
    )
    if overall is not None:
        css = _verdict_class(overall["verdict"])
        out.append(
            f"<p><b>Verdict (all customers):</b> <span class='{css}'>"
            f"{_esc(overall['verdict'])}</span></p>"
        )
    srm_rows = [r for r in treatment_rows if r["srm_warning"]]
    if srm_rows:
        names = ", ".join(_esc(r["segment"]) for r in srm_rows)
        out.append(
            "<div class='warn'><b>Sample ratio mismatch</b> in: "
            f"{names}. The observed control/treatment split differs from the design share "
            f"{float(exp['control_share']):.0%} (chi-squared p &lt; 0.001). Assignment or "
            "logging is broken somewhere; do not act on these results until it is explained.</div>"
        )
    plot = _forest_plot(treatment_rows)
    if plot:
        out.append(f"<img alt='forest plot of lift for {_esc(eid)}' src='{plot}'>")
    else:
        out.append("<p class='muted'>No slice has enough closed windows for an interval yet.</p>")
    out.append(
        "<table><tr><th>segment</th><th>control n</th><th>treatment n</th><th>still open</th>"
        "<th>control conv.</th><th>treatment conv.</th><th>lift (95 % CI)</th><th>p</th>"
        "<th>p adjusted</th><th>CUPED lift (95 % CI)</th><th>revenue/customer C → T</th>"
        "<th>SRM p</th></tr>"
    )
    for segment, pair in by_segment.items():
        c, t = pair["control"], pair["treatment"]
        srm = t["srm_p_value"]
        srm_cell = (
            "–"
            if srm is None
            else (
                f"<span class='bad'>{srm:.2g} ✗</span>"
                if t["srm_warning"]
                else f"<span class='ok'>{srm:.2g} ✓</span>"
            )
        )
        lift = _interval_cell(t["lift"], t["lift_ci_low"], t["lift_ci_high"])
        cuped = _interval_cell(t["cuped_lift"], t["cuped_ci_low"], t["cuped_ci_high"])
        if t["decision_basis"] == "cuped":
            cuped = f"<b>{cuped}</b>"
        out.append(
            f"<tr><td>{_esc(segment)}</td><td>{c['customers']:,}</td><td>{t['customers']:,}</td>"
            f"<td>{c['customers_pending'] + t['customers_pending']:,}</td>"
            f"<td>{_pct(c['conversion_rate'], False)}</td>"
            f"<td>{_pct(t['conversion_rate'], False)}</td><td>{lift}</td>"
            f"<td>{_num(t['p_value'], '{:.3g}')}</td>"
            f"<td>{_num(t['p_value_adjusted'], '{:.3g}')}</td><td>{cuped}</td>"
            f"<td>{_num(c['revenue_per_customer'])} → {_num(t['revenue_per_customer'])}</td>"
            f"<td>{srm_cell}</td></tr>"
            f"<tr class='vr'><td colspan='12' class='v {_verdict_class(t['verdict'])}'>"
            f"↳ {_esc(t['verdict'])}</td></tr>"
        )
    out.append("</table>")
    return out


_HOW_TO_READ = """
<h2>How to read this page</h2>
<ul>
<li>Everyone assigned to an experiment is counted in the arm they were assigned to
(intention to treat), whether or not they saw the content, once their conversion window has
closed. <i>Conversion</i> = at least one completed order on the days 1…window after
assignment (refunds and cancellations do not count).</li>
<li><b>Lift</b> is relative: treatment conversion rate / control conversion rate − 1. The bar is its
95 % confidence interval (delta method on the log scale). If the bar crosses 0 the data are
compatible with no effect.</li>
<li><b>CUPED</b> (dashed bar) adjusts for each customer's orders in the same number of days
before assignment; it removes noise and chance imbalance between the arms. When it is the more
precise estimate the verdict uses it (shown in bold in the table).</li>
<li>Per-segment p-values are Holm-corrected within each experiment and gated by the "all"
row: a segment is only declared better or worse when the whole experiment is (so the chance of
any false claim per experiment stays at 5 %). The "all" row is the pre-specified comparison and
is not corrected; colours and verdicts use the corrected value.</li>
<li><b>SRM</b>: a chi-squared test that the control/treatment split matches the design share. A
failed check (p &lt; 0.001) means the randomisation or the data are broken.</li>
<li>"Not enough data yet": fewer than 100 customers with a closed window in an arm, or fewer than
10 conversions in total.</li>
</ul>
"""


def write_report(
    experiments: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    *,
    as_of: str,
    settings: Settings | None = None,
) -> Path:
    """Write ``index.html`` for these results (atomically replaced) and return its path."""
    settings = settings or get_settings()
    out_dir = settings.experiment_reports_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Experiments – as of {_esc(as_of)}</title><style>{_CSS}</style></head><body>",
        "<h1>Experiments</h1>",
        f"<p class='muted'>Results as of {_esc(as_of)} over {len(experiments)} experiment(s).</p>",
    ]
    if not experiments:
        parts.append("<p>No experiment is defined in the content rules yet.</p>")
    else:
        parts.append("<ul>")
        for exp in experiments:
            eid = exp["experiment_id"]
            overall = next(
                (
                    r
                    for r in rows
                    if r["experiment_id"] == eid
                    and r["segment"] == "all"
                    and r["variant"] == "treatment"
                ),
                None,
            )
            verdict = overall["verdict"] if overall else ""
            parts.append(
                f"<li><a href='#{_esc(eid)}'>{_esc(eid)}</a>: "
                f"<span class='{_verdict_class(verdict)}'>{_esc(verdict)}</span></li>"
            )
        parts.append("</ul>")
        for exp in experiments:
            exp_rows = [r for r in rows if r["experiment_id"] == exp["experiment_id"]]
            parts.extend(_experiment_section(exp, exp_rows))
    parts.append(_HOW_TO_READ)
    parts.append("</body></html>")
    target = out_dir / "index.html"
    tmp = out_dir / f".index.html.{os.getpid()}.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(target)
    return target
