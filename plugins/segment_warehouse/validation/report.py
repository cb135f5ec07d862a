"""The governance ``index.html``: data-quality results in plain language.

Rendered entirely from ``audit.validation_results``, ``audit.load_manifest``
and ``audit.quarantine``, so it can be rebuilt at any time
(:func:`render_report`) and always matches the audit tables. The GX data docs
(per run and suite, linked from here) hold the technical detail for
engineers; this page is for reviewers who are not.

History is bounded: the page lists the last ``keep_runs`` runs (the audit
table keeps everything; GX data docs folders beyond that are pruned).
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.validation.suites import LAYER_SUITES, SuiteError, load_suite
from segment_warehouse.warehouse import table_exists

STATUS_TEXT = {
    "pass": "Passed",
    "warn": "Needs a look",
    "fail": "Failed",
}
STATUS_HELP = {
    "pass": "All checks passed.",
    "warn": "Some non-blocking checks did not pass. Data was still published; please review.",
    "fail": "A blocking check failed. The pipeline stopped so the data below was not published.",
}
SOURCE_TEXT = {
    "crm": "CRM contacts",
    "analytics": "Web/app events",
    "transactions": "Orders",
    "erasure": "Erasure requests",
}

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  color:#1f2933;background:#f5f7fa;font-size:16px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:28px;margin:0 0 4px} h2{font-size:22px;margin:34px 0 10px;
  border-bottom:2px solid #d9e2ec;padding-bottom:4px}
h3{font-size:18px;margin:0} .muted{color:#52606d} .small{font-size:13px}
.banner{border-radius:8px;padding:16px 20px;margin:18px 0;font-size:18px;color:#fff}
.banner.pass{background:#2f8132}.banner.warn{background:#b7791f}.banner.fail{background:#c53030}
.legend span{display:inline-block;margin-right:18px}
.badge{display:inline-block;border-radius:12px;padding:2px 10px;font-size:13px;
  font-weight:600;color:#fff;white-space:nowrap}
.badge.pass{background:#2f8132}.badge.warn{background:#b7791f}.badge.fail{background:#c53030}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:8px;margin:14px 0;
  padding:14px 18px}
.card-head{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.counts{margin-left:auto;color:#52606d;font-size:14px}
table{border-collapse:collapse;width:100%;margin-top:10px;background:#fff}
th,td{text-align:left;padding:7px 9px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f0f4f8;font-size:14px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fff5f5} tr.warn td{background:#fffaf0}
code{font-size:12px;color:#52606d;word-break:break-all}
details>summary{cursor:pointer;font-weight:600;margin:8px 0}
a{color:#1a56db}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _status(critical_failed: int, warnings: int) -> str:
    if critical_failed:
        return "fail"
    return "warn" if warnings else "pass"


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{STATUS_TEXT[status]}</span>'


def _has_column(con: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, table, column],
    ).fetchone()
    return bool(row and row[0])


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _suite_titles(settings: Settings) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Plain-language titles of suites and of their batches (from the suite files)."""
    titles: dict[str, str] = {}
    batch_titles: dict[tuple[str, str], str] = {}
    for layer in set(LAYER_SUITES.values()):
        try:
            spec = load_suite(layer, settings.expectations_dir)
        except SuiteError:
            continue
        titles[spec.name] = spec.title
        for batch in spec.batches:
            batch_titles[(spec.name, batch.name)] = batch.title
    return titles, batch_titles


IDENTITY_SAMPLE_ROWS = 20


def _identity_merges_section(con: duckdb.DuckDBPyConnection) -> str:
    """Probabilistic merges (audit.identity_merges): counts per decision and a sample.

    Record ids, scores and comparison levels only - the table holds no names,
    dates, emails or phones.
    """
    out = ["<h2>Probabilistic identity merges</h2>"]
    if not table_exists(con, "audit", "identity_merges"):
        return out[0] + '<p class="muted">The matcher has not run yet.</p>'
    out.append(
        '<p class="muted">Contacts that share no email or phone are merged when the '
        "matcher (Splink) finds them likely the same person and no guard objects "
        "(different first names, conflicting birth dates or genders, only name and place "
        "agreeing). To undo a merge, add the two contact ids to "
        "<code>dbt_project/seeds/identity_blocked_pairs.csv</code>; the next run honours "
        "it. All pairs: <code>audit.identity_merges</code>.</p>"
    )
    counts = _rows(
        con,
        "select decision, count(*) as pairs, max(model_version) as model_version "
        "from audit.identity_merges group by decision order by pairs desc",
    )
    if not counts:
        return "".join(out) + '<p class="muted">No candidate pairs in this run.</p>'
    out.append(
        "<table><tr><th>decision</th><th class=num>pairs</th><th>model</th></tr>"
        + "".join(
            f"<tr><td>{_e(r['decision'])}</td><td class=num>{_num(r['pairs'])}</td>"
            f"<td><code>{_e(r['model_version'])}</code></td></tr>"
            for r in counts
        )
        + "</table>"
    )
    sample = _rows(
        con,
        """
        select contact_id_l, contact_id_r, customer_id, match_probability, name_level,
               birth_date_level, location_level, email_local_level, phone_level
        from audit.identity_merges
        where decision = 'merged'
        order by match_probability, contact_id_l, contact_id_r
        limit ?
        """,
        [IDENTITY_SAMPLE_ROWS],
    )
    if sample:
        head = (
            "<tr><th>contact</th><th>contact</th><th>customer</th><th class=num>probability</th>"
            "<th>name</th><th>birth date</th><th>place</th><th>email</th><th>phone</th></tr>"
        )
        body = "".join(
            f"<tr><td><code>{_e(r['contact_id_l'])}</code></td>"
            f"<td><code>{_e(r['contact_id_r'])}</code></td>"
            f"<td><code>{_e(r['customer_id'])}</code></td>"
            f"<td class=num>{float(r['match_probability']):.4f}</td>"
            + "".join(
                f"<td>{_e(r[k])}</td>"
                for k in ("name_level", "birth_date_level", "location_level",
                          "email_local_level", "phone_level")
            )
            + "</tr>"
            for r in sample
        )
        out.append(
            f"<details open><summary>Least certain merges (up to {IDENTITY_SAMPLE_ROWS})"
            f"</summary><table>{head}{body}</table></details>"
        )
    return "".join(out)


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------
def _quarantine_section(con: duckdb.DuckDBPyConnection) -> str:
    out = ["<h2>Incoming files and rejected rows</h2>"]
    if not table_exists(con, "audit", "load_manifest"):
        return out[0] + '<p class="muted">No files have been loaded yet.</p>'
    out.append(
        '<p class="muted">Rows that break the data contract are not loaded; they are '
        "kept aside (quarantined) with the reason. A file that cannot be read at all is "
        "rejected as a whole. Re-delivered identical files are skipped.</p>"
    )
    per_source = _rows(
        con,
        """
        select source,
               count(*) as files,
               count(*) filter (where status = 'loaded') as files_loaded,
               count(*) filter (where status = 'duplicate') as files_duplicate,
               count(*) filter (where status = 'file_quarantined') as files_rejected,
               coalesce(sum(rows_in_file) filter (where status <> 'duplicate'), 0) as rows_in_files,
               coalesce(sum(rows_loaded), 0) as rows_loaded,
               coalesce(sum(rows_quarantined), 0) as rows_quarantined
        from audit.load_manifest group by source order by source
        """,
    )
    out.append(
        "<table><tr><th>Source</th><th class=num>Files received</th><th class=num>Loaded</th>"
        "<th class=num>Skipped (duplicate)</th><th class=num>Rejected whole</th>"
        "<th class=num>Rows in files</th><th class=num>Rows loaded</th>"
        "<th class=num>Rows rejected</th><th class=num>Rejected %</th></tr>"
    )
    for r in per_source:
        pct = 100.0 * r["rows_quarantined"] / r["rows_in_files"] if r["rows_in_files"] else 0.0
        cls = ' class="warn"' if r["rows_quarantined"] else ""
        out.append(
            f"<tr{cls}><td>{_e(SOURCE_TEXT.get(r['source'], r['source']))}</td>"
            f"<td class=num>{_num(r['files'])}</td><td class=num>{_num(r['files_loaded'])}</td>"
            f"<td class=num>{_num(r['files_duplicate'])}</td>"
            f"<td class=num>{_num(r['files_rejected'])}</td>"
            f"<td class=num>{_num(r['rows_in_files'])}</td>"
            f"<td class=num>{_num(r['rows_loaded'])}</td>"
            f"<td class=num>{_num(r['rows_quarantined'])}</td><td class=num>{pct:.2f}%</td></tr>"
        )
    if not per_source:
        out.append('<tr><td colspan=9 class="muted">No files received yet.</td></tr>')
    out.append("</table>")

    if table_exists(con, "audit", "quarantine"):
        reasons = _rows(
            con,
            """
            with kinds as (
                -- Group by the kind of problem: the text before ": " (the detail
                -- after it is the offending value or parser position), except
                -- for missing fields, where the field name is the kind.
                select source, source_file, reason,
                       case when reason like 'missing required field%' then reason
                            else split_part(reason, ': ', 1) end as kind
                from audit.quarantine where line_number is not null
            )
            select source, kind as reason, count(*) as rows_rejected,
                   count(distinct source_file) as files,
                   min(reason) filter (where reason <> kind) as example
            from kinds
            group by source, kind order by source, rows_rejected desc, kind
            """,
        )
        out.append("<h3 style='margin-top:22px'>Rejected rows by reason</h3>")
        if reasons:
            out.append(
                "<table><tr><th>Source</th><th>Reason</th><th class=num>Rows</th>"
                "<th class=num>Files</th><th>Example</th></tr>"
            )
            for r in reasons[:200]:  # free-text reasons could be many; keep the page small
                out.append(
                    f"<tr><td>{_e(SOURCE_TEXT.get(r['source'], r['source']))}</td>"
                    f"<td>{_e(r['reason'])}</td><td class=num>{_num(r['rows_rejected'])}</td>"
                    f"<td class=num>{_num(r['files'])}</td>"
                    f"<td class=muted>{_e(r['example'] or '')}</td></tr>"
                )
            out.append("</table>")
        else:
            out.append('<p class="muted">No individual rows were rejected.</p>')

        whole = _rows(
            con,
            """
            select source, source_file, reason, quarantined_at
            from audit.quarantine where line_number is null
            order by quarantined_at desc, source_file limit 100
            """,
        )
        out.append("<h3 style='margin-top:22px'>Files rejected as a whole</h3>")
        if whole:
            out.append("<table><tr><th>Source</th><th>File</th><th>Reason</th><th>When</th></tr>")
            for r in whole:
                when = r["quarantined_at"]
                when_text = when.strftime("%Y-%m-%d %H:%M UTC") if when else ""
                out.append(
                    f"<tr class=warn><td>{_e(SOURCE_TEXT.get(r['source'], r['source']))}</td>"
                    f"<td><code>{_e(r['source_file'])}</code></td><td>{_e(r['reason'])}</td>"
                    f"<td>{_e(when_text)}</td></tr>"
                )
            out.append("</table>")
        else:
            out.append('<p class="muted">No file was rejected as a whole.</p>')
    return "\n".join(out)


def scope_text(r: dict) -> str:
    """Which data a check covered, from its audit row (older rows have no scope)."""
    scope = r.get("check_scope")
    if scope == "table":
        note = str(r.get("scope_note") or "")
        # with SEGMENTS_ENGINE=spark the note also names the engine
        return note if note.startswith("whole table") else "whole table, in SQL (every run)"
    if scope == "rows":
        checked, total = r.get("rows_checked"), r.get("rows_total")
        # the run's reason is on the card; the cell says which rows of this batch
        run_reason, _, rows_rule = str(r.get("scope_note") or "").partition("; ")
        kind = "full" if run_reason.startswith("full") else "delta"
        detail = f"{kind}; {rows_rule}" if rows_rule else run_reason
        return f"rows: {_num(checked)} of {_num(total)} ({detail})"
    return "–"


def _suite_scope(results: list[dict]) -> str:
    """The suite's run scope (full or delta, and why) for the card header."""
    notes = [str(r.get("scope_note") or "") for r in results if r.get("check_scope") == "rows"]
    if not notes:
        return ""
    full = [n for n in notes if n.startswith("full")]
    return (full or notes)[0].split("; ")[0]


def _suite_card(
    suite: str,
    title: str,
    results: list[dict],
    docs_href: str | None,
    batch_titles: dict[tuple[str, str], str],
) -> str:
    failed = sum(1 for r in results if not r["success"] and r["severity"] == "critical")
    warned = sum(1 for r in results if not r["success"] and r["severity"] == "warning")
    status = _status(failed, warned)
    passed = len(results) - failed - warned
    docs = (
        f' · <a href="{_e(docs_href)}">technical details (Great Expectations)</a>'
        if docs_href
        else ""
    )
    out = [
        f'<div class="card"><div class="card-head">{_badge(status)}<h3>{_e(title)}</h3>'
        f'<span class="counts">{passed} passed · {warned} need a look · {failed} failed'
        f"{docs}</span></div>"
    ]
    run_scope = _suite_scope(results)
    if run_scope:
        out.append(
            f'<p class="small muted">Row-level checks this run: {_e(run_scope)}. '
            "Table-level checks (uniqueness, reconciliation, row accounting, empty values, "
            "links between tables) always cover the whole tables.</p>"
        )

    def row_status(r: dict) -> str:
        if r["success"]:
            return "pass"
        return "fail" if r["severity"] == "critical" else "warn"

    def table(rows: list[dict]) -> str:
        parts = [
            "<table><tr><th>Result</th><th>What is checked</th><th>What we found</th>"
            "<th>Data checked</th><th>Scope</th><th>If it fails</th></tr>"
        ]
        for r in rows:
            st = row_status(r)
            blocking = "stops the pipeline" if r["severity"] == "critical" else "warning only"
            data = batch_titles.get((suite, r["batch_name"]), r["batch_name"])
            parts.append(
                f'<tr class="{st}"><td>{_badge(st)}</td>'
                f"<td>{_e(r['description'] or r['expectation'])}<br>"
                f"<code>{_e(r['expectation'])}</code></td>"
                f"<td>{_e(r['observed_value'])}</td><td>{_e(data)}</td>"
                f"<td class=small>{_e(scope_text(r))}</td><td>{blocking}</td></tr>"
            )
        parts.append("</table>")
        return "\n".join(parts)

    # Problems first and always visible: that is what a reviewer looks for;
    # the passed checks stay one click away.
    problems = sorted(
        (r for r in results if not r["success"]), key=lambda r: row_status(r) != "fail"
    )
    passed_rows = [r for r in results if r["success"]]
    if problems:
        out.append(table(problems))
    out.append(
        f"<details><summary>Show the {len(passed_rows)} passed checks</summary>"
        + table(passed_rows)
        + "</details></div>"
    )
    return "\n".join(out)


def _runs_section(
    con: duckdb.DuckDBPyConnection, settings: Settings, keep_runs: int
) -> tuple[str, str, str]:
    """Return (banner, latest run html, history html)."""
    reports_dir = settings.validation_reports_dir
    if not table_exists(con, "audit", "validation_results"):
        return "", '<p class="muted">No validation has run yet.</p>', ""
    has_extra = _has_column(con, "audit", "validation_results", "description")
    extra = (
        "description, batch_name, data_docs_path"
        if has_extra
        else "null as description, null as batch_name, null as data_docs_path"
    )
    if _has_column(con, "audit", "validation_results", "check_scope"):
        extra += ", check_scope, rows_checked, rows_total, scope_note"
    runs = _rows(
        con,
        """
        select run_id, max(validated_at) as validated_at
        from audit.validation_results group by run_id
        order by validated_at desc limit ?
        """,
        [keep_runs],
    )
    if not runs:
        return "", '<p class="muted">No validation has run yet.</p>', ""
    run_ids = [r["run_id"] for r in runs]
    results = _rows(
        con,
        f"""
        select run_id, validated_at, suite, expectation, success, severity, observed_value,
               {extra}
        from audit.validation_results where run_id in (select unnest(?::varchar[]))
        order by validated_at, suite
        """,
        [run_ids],
    )
    titles, batch_titles = _suite_titles(settings)
    by_run: dict[str, dict[str, list[dict]]] = {}
    for r in results:
        by_run.setdefault(r["run_id"], {}).setdefault(r["suite"], []).append(r)

    def docs_href(rows: list[dict]) -> str | None:
        rel = next((r["data_docs_path"] for r in rows if r["data_docs_path"]), None)
        return rel if rel and (reports_dir / rel).exists() else None

    def suite_order(name: str) -> int:
        order = [
            "raw_contract",
            "staging",
            "marts",
            "segments",
            "predictions",
            "personalisation",
            "experiments",
        ]
        return order.index(name) if name in order else len(order)

    # Latest state per suite: suites are validated by different DAGs
    # (warehouse vs segments), so "the latest run" alone may miss one.
    latest: dict[str, tuple[dict, list[dict]]] = {}
    for run in runs:
        for suite, rows in by_run.get(run["run_id"], {}).items():
            latest.setdefault(suite, (run, rows))

    crit = sum(
        1
        for _, rows in latest.values()
        for r in rows
        if not r["success"] and r["severity"] == "critical"
    )
    warn = sum(
        1
        for _, rows in latest.values()
        for r in rows
        if not r["success"] and r["severity"] == "warning"
    )
    status = _status(crit, warn)
    banner = (
        f'<div class="banner {status}"><b>{STATUS_TEXT[status]}.</b> {STATUS_HELP[status]} '
        f"({crit} blocking failure{'s' if crit != 1 else ''}, {warn} warning"
        f"{'s' if warn != 1 else ''} in the latest check of each area.)</div>"
    )

    latest_html = ["<h2>Latest results per area</h2>"]
    for suite in sorted(latest, key=suite_order):
        run, rows = latest[suite]
        when = run["validated_at"].strftime("%Y-%m-%d %H:%M UTC")
        title = titles.get(suite, suite)
        card = _suite_card(suite, title, rows, docs_href(rows), batch_titles)
        card = card.replace(
            "</h3>", f'</h3><span class="muted small">run {_e(run["run_id"])} · {when}</span>', 1
        )
        latest_html.append(card)

    hist = [
        "<h2>Run history</h2>",
        f'<p class="muted">The last {len(runs)} validation runs (older results stay in the '
        "<code>audit.validation_results</code> table).</p>",
        "<table><tr><th>When (UTC)</th><th>Run</th><th>Area</th><th>Result</th>"
        "<th class=num>Passed</th><th class=num>Need a look</th><th class=num>Failed</th>"
        "<th>Details</th></tr>",
    ]
    for run in runs:
        for suite, rows in sorted(
            by_run.get(run["run_id"], {}).items(), key=lambda kv: suite_order(kv[0])
        ):
            failed = sum(1 for r in rows if not r["success"] and r["severity"] == "critical")
            warned = sum(1 for r in rows if not r["success"] and r["severity"] == "warning")
            href = docs_href(rows)
            link = (
                f'<a href="{_e(href)}">data docs</a>'
                if href
                else '<span class="muted">pruned</span>'
            )
            hist.append(
                f"<tr><td>{run['validated_at'].strftime('%Y-%m-%d %H:%M')}</td>"
                f"<td><code>{_e(run['run_id'])}</code></td><td>{_e(titles.get(suite, suite))}</td>"
                f"<td>{_badge(_status(failed, warned))}</td>"
                f"<td class=num>{len(rows) - failed - warned}</td><td class=num>{warned}</td>"
                f"<td class=num>{failed}</td><td>{link}</td></tr>"
            )
    hist.append("</table>")
    return banner, "\n".join(latest_html), "\n".join(hist)


def render_report(
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    settings: Settings | None = None,
    keep_runs: int = 30,
) -> Path:
    """(Re)write ``<validation_reports_dir>/index.html`` from the audit tables."""
    settings = settings or get_settings()
    if con is None:
        from segment_warehouse.warehouse import warehouse

        with warehouse(read_only=True, settings=settings) as ro:
            return render_report(ro, settings=settings, keep_runs=keep_runs)

    banner, latest, history = _runs_section(con, settings, keep_runs)
    quarantine = _quarantine_section(con)
    identity = _identity_merges_section(con)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data quality report - customer segmentation warehouse</title>
<style>{CSS}</style></head>
<body><main>
<h1>Data quality report</h1>
<p class="muted">Customer-segmentation warehouse · generated {generated}</p>
{banner}
<p class="legend small">{_badge("pass")} the rule holds &nbsp;
{_badge("warn")} a non-blocking rule did not hold; data was still published &nbsp;
{_badge("fail")} a blocking rule did not hold; the pipeline stopped before publishing</p>
{latest}
{quarantine}
{identity}
{history}
<p class="small muted" style="margin-top:30px">Each area links to its technical
report (Great Expectations data docs). Rules are kept under version control in
<code>expectations/</code>; every result is stored in
<code>audit.validation_results</code>.</p>
</main></body></html>
"""
    out = settings.validation_reports_dir / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # readers never see a half-written page
    return out


__all__ = ["render_report"]
