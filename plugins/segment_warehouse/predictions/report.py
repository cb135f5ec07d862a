"""The prediction section of the segment report (static HTML, inline PNGs).

Read back from ``segments.prediction_runs`` (backtest JSON) and the current
``segments.customer_predictions``: calibration plot, lift chart, permutation
feature importances on the backtest, score distribution per segment.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.predictions import store
from segment_warehouse.warehouse import table_exists


def _png(fig: Any) -> str:
    from segment_warehouse.segment_report import _png as png  # one encoder for the report

    return png(fig)


def _run(con: duckdb.DuckDBPyConnection, model_version: str | None) -> dict[str, Any] | None:
    if not table_exists(con, "segments", "prediction_runs"):
        return None
    if model_version:
        return store.run_of_version(con, model_version)
    return store.latest_run(con)


def _plot_calibration(bt: dict[str, Any], title: str) -> str | None:
    if not bt or "baseline" not in bt:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.plot([0, 1], [0, 1], ":", color="#999", label="perfect")
    for who, color in (("model", "#1f77b4"), ("baseline", "#ff7f0e")):
        curve = (bt.get(who) or {}).get("calibration_curve") or {}
        if curve.get("mean_predicted"):
            ax.plot(curve["mean_predicted"], curve["observed"], "o-", color=color, label=who)
    top = max(
        [
            0.05,
            *[
                max((bt.get(w) or {}).get("calibration_curve", {}).get(k) or [0])
                for w in ("model", "baseline")
                for k in ("mean_predicted", "observed")
            ],
        ]
    )
    ax.set_xlim(0, min(1, top * 1.1))
    ax.set_ylim(0, min(1, top * 1.1))
    ax.set_xlabel("mean predicted probability (decile)")
    ax.set_ylabel("observed rate")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, loc="left", fontsize=10)
    return _png(fig)


def _plot_lift(bt: dict[str, Any], title: str) -> str | None:
    if not bt or not (bt.get("baseline") or {}).get("lift_curve"):
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    x = list(range(1, 11))
    width = 0.4
    for i, (who, color) in enumerate((("model", "#1f77b4"), ("baseline", "#ff7f0e"))):
        lifts = (bt.get(who) or {}).get("lift_curve") or []
        if lifts:
            ax.bar([v + (i - 0.5) * width for v in x], lifts, width, color=color, label=who)
    ax.axhline(1, color="#999", lw=1, ls=":")
    ax.set_xticks(x)
    ax.set_xlabel("score decile (1 = highest)")
    ax.set_ylabel("lift (rate / overall rate)")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, loc="left", fontsize=10)
    return _png(fig)


def _plot_importance(bt: dict[str, Any], title: str) -> str | None:
    imp = (bt or {}).get("feature_importance") or {}
    if not imp:
        return None
    items = sorted(imp.items(), key=lambda kv: kv[1])[-12:]
    fig, ax = plt.subplots(figsize=(5.4, 0.32 * len(items) + 1.0))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#2ca02c")
    ax.set_xlabel("drop in ROC AUC when shuffled (backtest)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, loc="left", fontsize=10)
    return _png(fig)


def _plot_by_segment(con: duckdb.DuckDBPyConnection) -> str | None:
    if not table_exists(con, "segments", "customer_segments"):
        return None
    rows = con.execute(
        """
        select s.segment_id || ' · ' || s.segment_name as seg,
               list(p.purchase_probability_30d) as pp
        from segments.customer_predictions p
        join segments.customer_segments s using (customer_id)
        group by all order by min(s.segment_id)
        """
    ).fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 0.5 * len(rows) + 1.4))
    ax.boxplot([r[1] for r in rows][::-1], vert=False, showfliers=False, widths=0.6)
    ax.set_yticks(range(1, len(rows) + 1), [r[0] for r in rows][::-1], fontsize=8)
    ax.set_xlabel("purchase_probability_30d")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        "Purchase probability per segment (box: quartiles; whiskers: 1.5 IQR)",
        loc="left",
        fontsize=10,
    )
    return _png(fig)


def _fmt(v: Any, spec: str = "{:.3f}") -> str:
    return "–" if v is None else spec.format(v)


def prediction_section(con: duckdb.DuckDBPyConnection, model_version: str | None = None) -> str:
    """HTML fragment (h2 + content) for the given or latest prediction run; '' if none."""
    run = _run(con, model_version)
    if run is None:
        return ""
    esc = html.escape
    bts = run["backtest"] or {}
    parts = [
        "<h2>Predictions</h2>",
        f"<div class='sub'>model <code>{esc(run['model_version'])}</code> · as of "
        f"{run['as_of_date']} · purchase: {esc(run['purchase_method'])} · churn "
        f"({run['churn_window_days']} days): {esc(run['churn_method'])} · "
        f"{run['n_scored']:,} scored, {run['n_excluded']:,} not scored (no consent)</div>",
        f"<p><b>Verdict.</b> {esc(run['verdict'])}</p>",
        "<table><tr><th>target</th><th>backtest</th><th>scorer</th><th class='n'>ROC AUC</th>"
        "<th class='n'>PR AUC</th><th class='n'>Brier</th><th class='n'>top-decile lift</th>"
        "<th class='n'>mean predicted</th><th class='n'>observed rate</th></tr>",
    ]
    for target in ("purchase", "churn"):
        bt = bts.get(target)
        if not bt:
            parts.append(
                f"<tr><td>{target}</td><td colspan='8'>no backtest (not enough labelled "
                "history)</td></tr>"
            )
            continue
        for who in ("model", "baseline"):
            m = bt.get(who)
            if not m:
                continue
            parts.append(
                f"<tr><td>{target}</td><td>{esc(str(bt.get('cutoff')))} "
                f"({esc(str(bt.get('kind')))}; {bt.get('rows', 0):,} rows)</td>"
                f"<td>{'gradient boosting' if who == 'model' else 'RFM baseline'}</td>"
                + "".join(
                    f"<td class='n'>{_fmt(m.get(k), s)}</td>"
                    for k, s in (
                        ("roc_auc", "{:.3f}"),
                        ("pr_auc", "{:.3f}"),
                        ("brier_score", "{:.4f}"),
                        ("lift_top_decile", "{:.2f}"),
                        ("mean_predicted", "{:.3f}"),
                        ("observed_rate", "{:.3f}"),
                    )
                )
                + "</tr>"
            )
    parts.append("</table>")
    imgs = []
    for target in ("purchase", "churn"):
        bt = bts.get(target) or {}
        for fn, label in (
            (_plot_calibration, "calibration"),
            (_plot_lift, "lift"),
            (_plot_importance, "feature importance"),
        ):
            img = fn(bt, f"{target}: {label} (backtest)")
            if img:
                imgs.append(f"<div><img src='{img}' alt='{target} {label}'></div>")
    parts.append("<div class='grid'>" + "".join(imgs) + "</div>")
    seg = _plot_by_segment(con)
    if seg:
        parts.append(f"<img src='{seg}' alt='score distribution per segment'>")
    cutoffs = run["training_cutoffs"] or {}
    parts.append(
        "<p class='note'>Trained on features computed as of past cut-offs from the warehouse's "
        "history (purchase cut-offs: "
        + esc(", ".join(cutoffs.get("purchase", [])) or "none")
        + "; churn: "
        + esc(", ".join(cutoffs.get("churn", [])) or "none")
        + "), labelled by the window after each; the backtest scores the latest cut-off whose "
        "window is complete with a model trained only on earlier windows (time_split) or, with "
        "too little history, on other customers (customer_holdout). Feature importance: "
        "permutation importance on the backtest. See docs/predictions.md.</p>"
    )
    return "\n".join(parts)


def write_report(
    con: duckdb.DuckDBPyConnection, model_version: str, *, settings: Settings | None = None
) -> Path:
    """predictions.html (standalone) and, when a segment run exists, the segment report
    again so its prediction section shows this model."""
    from segment_warehouse import segment_report

    settings = settings or get_settings()
    body = prediction_section(con, model_version)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Predictions – "
        f"{html.escape(model_version)}</title><style>{segment_report._CSS}</style></head><body>"
        f"<h1>Customer predictions</h1>{body}</body></html>"
    )
    path = settings.segment_reports_dir / "predictions.html"
    segment_report._write_atomic(path, page)
    if table_exists(con, "segments", "segment_runs"):
        latest = con.execute(
            "select run_id from segments.segment_runs order by created_at desc, run_id desc limit 1"
        ).fetchall()
        if latest:
            segment_report.write_report(con, latest[0][0], settings=settings)
    return path
