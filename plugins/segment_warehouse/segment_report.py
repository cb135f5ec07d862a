"""Static, self-contained HTML segment report (matplotlib PNGs inlined as base64).

Everything is read back from ``segments.*`` and the run's model file, so a
report can be regenerated for any run without reclustering. Written to
``segment_reports_dir/runs/<run_id>.html``; ``index.html`` always shows the
latest run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import joblib
import matplotlib

matplotlib.use("Agg")  # headless: Airflow workers have no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from sklearn.decomposition import PCA

from segment_warehouse.clustering.features import FEATURES
from segment_warehouse.clustering.report_k import k_selection_section
from segment_warehouse.clustering.space import NO_ACTIVITY_SEGMENT
from segment_warehouse.clustering.store import first_row
from segment_warehouse.config import Settings, get_settings

_PALETTE = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
_LABELS = {f.name: f.label for f in FEATURES}
# Means shown in the segment table: the few numbers a marketer asks for first.
_KEY_MEANS = (
    ("frequency", "orders", "{:.1f}"),
    ("monetary", "revenue", "{:,.0f}"),
    ("avg_order_value", "AOV", "{:,.0f}"),
    ("recency_days", "days since order", "{:,.0f}"),
    ("sessions_30d", "sessions 30d", "{:.1f}"),
)


def report_path(settings: Settings, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return settings.segment_reports_dir / "runs" / f"{safe}.html"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value: Any, spec: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return spec.format(value)


def _load_bundle(path: str | None) -> dict[str, Any] | None:
    if not path or not Path(path).exists():
        return None
    return joblib.load(path)


def _runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute("select * from segments.segment_runs order by created_at, run_id")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _segments(con: duckdb.DuckDBPyConnection, run: dict[str, Any], bundle: dict | None) -> list:
    if bundle is not None:
        return bundle["segments"]
    # Model file gone: fall back to the current summary (no z-scores then).
    rows = con.execute(
        "select * from segments.segment_summary where run_id = ? order by segment_id",
        [run["run_id"]],
    ).fetchall()
    cols = [c[0] for c in con.description]
    out = []
    for r in rows:
        d = dict(zip(cols, r, strict=True))
        out.append(
            {
                "segment_id": d["segment_id"],
                "segment_name": d["segment_name"],
                "size": d["size"],
                "share": d["share"],
                "buyer_share": math.nan,
                "z": {},
                "means": {f.name: d.get(f"mean_{f.name}") for f in FEATURES},
                "traits": d.get("traits") or "",
            }
        )
    return out


def _migration(
    con: duckdb.DuckDBPyConnection, prev: dict[str, Any], run: dict[str, Any]
) -> dict[tuple[Any, Any], int]:
    """Customer counts (previous segment -> current segment) from the history table.

    Point-in-time reads at both runs' created_at, so this works for any pair
    of consecutive runs, not just the latest. None = not profiled in that run.
    """
    rows = con.execute(
        """
        with p as (select customer_id, segment_id from segments.segment_membership_history
                   where valid_from <= $tp and (valid_to is null or valid_to > $tp)),
             c as (select customer_id, segment_id from segments.segment_membership_history
                   where valid_from <= $tc and (valid_to is null or valid_to > $tc))
        select p.segment_id, c.segment_id, count(*)
        from p full outer join c using (customer_id) group by all
        """,
        {"tp": prev["created_at"], "tc": run["created_at"]},
    ).fetchall()
    return {(a, b): int(n) for a, b, n in rows}


# --- plots ---------------------------------------------------------------------------


def _plot_sizes(segs: list[dict], colors: dict[int, Any]) -> str:
    fig, ax = plt.subplots(figsize=(5.6, 0.45 * len(segs) + 1.0))
    names = [f"{s['segment_id']} · {s['segment_name']}" for s in segs][::-1]
    sizes = [s["size"] for s in segs][::-1]
    bars = ax.barh(names, sizes, color=[colors[s["segment_id"]] for s in segs][::-1])
    for bar, s in zip(bars, segs[::-1], strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f"  {s['size']:,} ({s['share']:.0%})",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, max(sizes) * 1.3)
    ax.set_xlabel("customers")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Segment sizes", loc="left", fontsize=11)
    return _png(fig)


def _plot_heatmap(segs: list[dict]) -> str | None:
    if not segs or not segs[0]["z"]:
        return None
    feats = [f.name for f in FEATURES]
    Z = np.array([[s["z"].get(f, math.nan) for f in feats] for s in segs], dtype=float)
    fig, ax = plt.subplots(figsize=(10.5, 0.5 * len(segs) + 2.2))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#e6e6e6")
    im = ax.imshow(np.ma.masked_invalid(Z), cmap=cmap, vmin=-2.5, vmax=2.5, aspect="auto")
    ax.set_xticks(range(len(feats)), [_LABELS[f] for f in feats], rotation=35, ha="right")
    ax.set_yticks(range(len(segs)), [f"{s['segment_id']} · {s['segment_name']}" for s in segs])
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            v = Z[i, j]
            text = "n/a" if math.isnan(v) else f"{v:+.1f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if not math.isnan(v) and abs(v) > 1.6 else "#222",
            )
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="z-score vs population")
    ax.set_title(
        "What makes each segment different (z-score of segment mean; purchase columns vs buyers;"
        " n/a = no buyers)",
        loc="left",
        fontsize=10,
    )
    return _png(fig)


def _plot_projection(bundle: dict | None, segs: list[dict], colors: dict[int, Any]) -> str | None:
    if bundle is None or len(bundle["projection_sample"]["X"]) < 3:
        return None
    X = np.asarray(bundle["projection_sample"]["X"], dtype=float)
    ids = np.asarray(bundle["projection_sample"]["segment_id"])
    pca = PCA(n_components=2, random_state=0).fit(X)
    P = pca.transform(X)
    centers = np.asarray(bundle["model"].cluster_centers_, dtype=float)
    label_to_id = bundle["label_to_segment_id"]
    C = pca.transform(centers)
    names = {s["segment_id"]: s["segment_name"] for s in segs}
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    for sid in sorted(names):
        m = ids == sid
        ax.scatter(
            P[m, 0], P[m, 1], s=6, alpha=0.45, color=colors[sid], label=f"{sid} · {names[sid]}"
        )
    for label, sid in label_to_id.items():
        x, y = C[int(label)]
        # Id badges rather than names: names of nearby centroids would overlap.
        ax.scatter([x], [y], s=260, marker="o", color=colors[sid], edgecolor="black", lw=1.2)
        ax.text(x, y, str(sid), ha="center", va="center", fontsize=8, weight="bold", color="white")
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%} of variance)")
    ax.legend(
        fontsize=8, markerscale=2.5, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
    )
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        f"2-D projection (PCA of {len(X):,} sampled customers; numbered dot = segment centroid)",
        loc="left",
        fontsize=10,
    )
    return _png(fig)


def _plot_migration(
    counts: dict[tuple[Any, Any], int], prev_names: dict[int, str], segs: list[dict]
) -> str:
    prev_ids = sorted({a for a, _ in counts if a is not None})
    cur_ids = [s["segment_id"] for s in segs]
    rows = [*prev_ids, None]
    cols = [*cur_ids, None]
    M = np.array([[counts.get((a, b), 0) for b in cols] for a in rows], dtype=float)
    M[-1, -1] = 0
    shares = M / np.maximum(M.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 3.8, 0.5 * len(rows) + 2.4))
    cmap = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.03, 0.9, 256)))
    ax.imshow(shares, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    names = {s["segment_id"]: s["segment_name"] for s in segs}
    ax.set_xticks(
        range(len(cols)),
        [f"{b} · {names[b]}" if b is not None else "not profiled" for b in cols],
        rotation=35,
        ha="right",
        fontsize=8,
    )
    ax.set_yticks(
        range(len(rows)),
        [
            f"{a} · {prev_names.get(a, '?')}" if a is not None else "new / not profiled"
            for a in rows
        ],
        fontsize=8,
    )
    for i in range(len(rows)):
        for j in range(len(cols)):
            if M[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(M[i, j]):,}\n{shares[i, j]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.55 else "#222",
                )
    ax.set_xlabel("segment in this run")
    ax.set_ylabel("segment in previous run")
    ax.set_title(
        "Migration since the previous run (counts, share of the previous segment)",
        loc="left",
        fontsize=10,
    )
    return _png(fig)


def _segments_card(k: int, segs: list[dict]) -> str:
    """k-means segments, plus the fixed no-activity segment when it has members."""
    fixed = any(s["segment_id"] == NO_ACTIVITY_SEGMENT["segment_id"] for s in segs)
    return f"{k} + 1" if fixed else str(k)


def _plot_k(candidates: list[dict]) -> str:
    ks = [c["k"] for c in candidates]
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ax.plot(ks, [c["silhouette"] for c in candidates], "o-", color="#1f77b4")
    chosen = [c for c in candidates if c.get("chosen")]
    for c in chosen:
        ax.scatter([c["k"]], [c["silhouette"]], s=160, facecolor="none", edgecolor="#d62728", lw=2)
    ax.set_xlabel("k")
    ax.set_ylabel("silhouette (sample)", color="#1f77b4")
    ax2 = ax.twinx()
    ax2.plot(ks, [c["inertia"] for c in candidates], "s--", color="#7f7f7f", alpha=0.7)
    ax2.set_ylabel("inertia (sample)", color="#7f7f7f")
    ax.set_xticks(ks)
    ax.set_title("Choice of k (red circle = chosen)", loc="left", fontsize=10)
    return _png(fig)


# --- HTML ----------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px 32px;
color:#222;max-width:1220px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px} .sub{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px;background:#fafafa}
.card .v{font-size:20px;font-weight:600}
.card .l{font-size:11px;color:#666;text-transform:uppercase}
table{border-collapse:collapse;font-size:13px;width:100%} th,td{padding:5px 8px;
border-bottom:1px solid #eee;text-align:left;vertical-align:top} th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} img{max-width:100%}
.pair>div{flex:1 1 45%;min-width:420px}
.note{color:#666;font-size:12px} code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""


def _hex(rgb: Any) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def render_report(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The report for ``run_id`` as one self-contained HTML string."""
    runs = _runs(con)
    pos = next(i for i, r in enumerate(runs) if r["run_id"] == run_id)
    run, prev = runs[pos], (runs[pos - 1] if pos else None)
    bundle = _load_bundle(run["model_path"])
    segs = sorted(_segments(con, run, bundle), key=lambda s: s["segment_id"])
    colors = {s["segment_id"]: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(segs)}
    candidates = run["k_candidates"]
    candidates = json.loads(candidates) if isinstance(candidates, str) else candidates
    features = run["features"]
    features = json.loads(features) if isinstance(features, str) else features
    esc = html.escape

    cards = [
        ("segments (k)", _segments_card(run["k"], segs)),
        ("silhouette", _fmt(run["silhouette"])),
        ("ARI vs previous", _fmt(run["ari_vs_previous"])),
        ("changed segment", _fmt(run["changed_share"], "{:.2%}")),
        ("profiled", f"{run['n_profiled']:,}"),
        ("excluded (no consent)", f"{run['n_excluded']:,}"),
        ("algorithm", run["algorithm"]),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Customer segments – {esc(run_id)}</title><style>{_CSS}</style></head><body>",
        "<h1>Customer segments</h1>",
        f"<div class='sub'>run <code>{esc(run_id)}</code> · data as of {run['as_of_date']} · "
        f"created {run['created_at']:%Y-%m-%d %H:%M %Z} · fingerprint "
        f"<code>{esc(run['input_fingerprint'][:12])}</code></div>",
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><div class='v'>{esc(v)}</div><div class='l'>{esc(lab)}</div></div>"
            for lab, v in cards
        )
        + "</div>",
        "<h2>Segments</h2><table><tr><th>id</th><th>segment</th><th class='n'>customers</th>"
        "<th class='n'>share</th><th>distinguishing traits</th>"
        + "".join(f"<th class='n'>{esc(lab)}</th>" for _, lab, _ in _KEY_MEANS)
        + "</tr>",
    ]
    for s in segs:
        means = s["means"]
        parts.append(
            f"<tr><td>{s['segment_id']}</td><td><span class='sw' style='background:"
            f"{_hex(colors[s['segment_id']])}'></span><b>{esc(s['segment_name'])}</b></td>"
            f"<td class='n'>{s['size']:,}</td><td class='n'>{s['share']:.1%}</td>"
            f"<td>{esc(s['traits'])}</td>"
            + "".join(f"<td class='n'>{_fmt(means.get(f), spec)}</td>" for f, _, spec in _KEY_MEANS)
            + "</tr>"
        )
    parts.append(
        "</table><p class='note'>Traits: the features whose segment mean differs most from the "
        "population (z-score in log space; order-based features compared with buyers only). "
        "Means are raw values in reporting currency / days, nulls ignored (e.g. days since order "
        "only over customers who ordered).</p>"
    )
    parts.append("<div class='grid pair'>")
    parts.append(f"<div><img src='{_plot_sizes(segs, colors)}' alt='segment sizes'></div>")
    parts.append(f"<div><img src='{_plot_k(candidates)}' alt='k selection'></div></div>")
    parts.append(k_selection_section(candidates))
    heat = _plot_heatmap(segs)
    if heat:
        parts.append(f"<h2>Segment profiles</h2><img src='{heat}' alt='centroid heatmap'>")
    parts.append("<h2>Projection and migration</h2><div class='grid'>")
    proj = _plot_projection(bundle, segs, colors)
    parts.append(
        f"<div><img src='{proj}' alt='PCA projection'></div>"
        if proj
        else "<p class='note'>Model file missing: no projection.</p>"
    )
    if prev is not None:
        prev_bundle = _load_bundle(prev["model_path"])
        prev_names = (
            {s["segment_id"]: s["segment_name"] for s in prev_bundle["segments"]}
            if prev_bundle
            else {}
        )
        mig = _plot_migration(_migration(con, prev, run), prev_names, segs)
        parts.append(
            f"<div><img src='{mig}' alt='migration matrix'><p class='note'>Previous run "
            f"<code>{esc(prev['run_id'])}</code>. Same id = same meaning: ids are carried over by "
            "matching centroids. 'not profiled' = consent withdrawn or customer removed.</p></div>"
        )
    else:
        parts.append("<p class='note'>First run: no previous run to compare with.</p>")
    parts.append("</div>")

    # Predictions (purchase propensity, churn risk) of the latest prediction run, if any.
    from segment_warehouse.predictions.report import prediction_section

    parts.append(prediction_section(con))
    parts.append(
        "<h2>Run history</h2><table><tr><th>run</th><th>as of</th><th>algorithm</th>"
        "<th class='n'>k</th><th class='n'>silhouette</th><th class='n'>ARI vs prev</th>"
        "<th class='n'>changed</th><th class='n'>profiled</th><th class='n'>excluded</th></tr>"
    )
    for r in reversed(runs[max(0, pos - 11) : pos + 1]):
        parts.append(
            f"<tr><td><code>{esc(r['run_id'])}</code></td><td>{r['as_of_date']}</td>"
            f"<td>{esc(r['algorithm'])}</td><td class='n'>{r['k']}</td>"
            f"<td class='n'>{_fmt(r['silhouette'])}</td><td class='n'>{_fmt(r['ari_vs_previous'])}"
            f"</td><td class='n'>{_fmt(r['changed_share'], '{:.1%}')}</td>"
            f"<td class='n'>{r['n_profiled']:,}</td><td class='n'>{r['n_excluded']:,}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<h2>Method</h2><p class='note'>Customers with <code>marketing_consent = false</code> are "
        "not profiled (unknown consent is). Features are imputed, skewed ones log1p-transformed, "
        "shares smoothed towards a neutral value when based on few events, then scaled "
        "(median/IQR; shares by their std); k is chosen by the mean of silhouette, "
        "Calinski-Harabasz and Davies-Bouldin, each scaled over the candidates (table above); "
        "customers with no order ever and no activity in 90 days form the fixed segment "
        f"{NO_ACTIVITY_SEGMENT['segment_id']} outside k-means; segment ids are "
        "kept across runs by Hungarian matching of centroids. Features: "
        + ", ".join(
            f"<code>{esc(f['name'])}</code> ({esc(f['transform'])}; {esc(f['impute'])})"
            for f in features
        )
        + ".</p></body></html>"
    )
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees a half-written report


def write_report(
    con: duckdb.DuckDBPyConnection, run_id: str, *, settings: Settings | None = None
) -> Path:
    """Write the per-run report; also ``index.html`` if ``run_id`` is the latest run."""
    settings = settings or get_settings()
    text = render_report(con, run_id)
    _write_atomic(report_path(settings, run_id), text)
    latest = first_row(
        con.execute(
            "select run_id from segments.segment_runs order by created_at desc, run_id desc limit 1"
        )
    )
    index = settings.segment_reports_dir / "index.html"
    if latest is not None and latest[0] == run_id:
        _write_atomic(index, text)
    return index
