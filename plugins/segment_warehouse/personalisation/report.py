"""The personalisation page: ``personalisation_reports_dir/index.html``.

Static, self-contained HTML rendered from ``personalisation.*`` alone: per
slot, how many customers get which content and why (the rule, or the
default); how often a rule was shadowed by a higher-priority rule of the same
slot; experiment sizes per variant. Every value from the data or the rules
file is escaped (rule ids, audiences and segment names are user-written text).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import Settings, get_settings

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1f2933;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
p.meta{color:#52606d;margin-top:0}table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f5f7fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f0f4f8;padding:0 .25rem;border-radius:3px;font-size:.9em}
.bar{display:inline-block;height:.7rem;background:#3e7bfa;border-radius:2px;vertical-align:middle}
.bar.default{background:#9aa5b1}.bar.control{background:#f0b429}
.tag{display:inline-block;padding:0 .4rem;border-radius:8px;font-size:.8em;background:#e3f8ff}
.tag.control{background:#fff3c4}table.rules td:nth-child(4){max-width:260px;
overflow-wrap:anywhere}.tag.default{background:#e4e7eb}.muted{color:#7b8794}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def _pct(part: Any, whole: Any) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else ""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    (n,) = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'personalisation' and table_name = ?",
        [table],
    ).fetchall()[0]
    return bool(n)


def render(con: duckdb.DuckDBPyConnection) -> str:
    """The page as an HTML string (reads personalisation.* through ``con``)."""
    needed = ("content_decisions", "content_slots", "content_rules", "rule_stats")
    if not all(_exists(con, t) for t in needed):
        body = "<p>No decisions yet: the decide stage has not run.</p>"
        return _page("Personalisation", "", body)

    run = _rows(
        con,
        "select * from personalisation.decision_runs order by as_of_date desc limit 1",
    ) if _exists(con, "decision_runs") else []
    meta = ""
    if run:
        r = run[0]
        meta = (
            f"As of {_e(r['as_of_date'])} · rules version <code>{_e(r['rules_version'])}</code> "
            f"(git blob <code>{_e(r['rules_git_blob_sha'][:12])}</code>, {_e(r['rules_path'])}) · "
            f"{_n(r['consenting_customers'])} of {_n(r['customers'])} customers consent to "
            "personalisation; everyone else gets each slot's default."
        )

    slots = _rows(con, "select * from personalisation.content_slots order by position")
    by_content = _rows(
        con,
        """
        select slot_id, content_id, rule_id, variant, count(*) as customers
        from personalisation.content_decisions
        group by all
        order by slot_id, customers desc, content_id, rule_id nulls last, variant nulls first
        """,
    )
    stats = {
        r["rule_id"]: r for r in _rows(con, "select * from personalisation.rule_stats")
    }
    rules = _rows(con, "select * from personalisation.content_rules order by position")
    overlap = _rows(
        con, "select * from personalisation.rule_overlap order by slot_id, customers desc"
    ) if _exists(con, "rule_overlap") else []

    parts: list[str] = ["<h2>Slots: who gets what, and why</h2>"]
    for slot in slots:
        rows = [r for r in by_content if r["slot_id"] == slot["slot_id"]]
        total = sum(r["customers"] for r in rows)
        parts.append(
            f"<h3>{_e(slot['slot_id'])} <span class='muted'>default "
            f"<code>{_e(slot['default_content_id'])}</code></span></h3>"
        )
        if slot.get("description"):
            parts.append(f"<p class='meta'>{_e(slot['description'])}</p>")
        parts.append(
            "<table><tr><th>content</th><th>why</th><th>customers</th><th>share</th>"
            "<th></th></tr>"
        )
        for r in rows:
            if r["rule_id"] is None:
                why, kind = "<span class='tag default'>default: no rule matched</span>", "default"
            elif r["variant"] == "control":
                why = (f"rule <code>{_e(r['rule_id'])}</code> "
                       "<span class='tag control'>experiment control</span>")
                kind = "control"
            else:
                tag = " <span class='tag'>experiment treatment</span>" if r["variant"] else ""
                why, kind = f"rule <code>{_e(r['rule_id'])}</code>{tag}", ""
            width = int(200 * r["customers"] / total) if total else 0
            parts.append(
                f"<tr><td><code>{_e(r['content_id'])}</code></td><td>{why}</td>"
                f"<td class='n'>{_n(r['customers'])}</td>"
                f"<td class='n'>{_pct(r['customers'], total)}</td>"
                f"<td><span class='bar {kind}' style='width:{width}px'></span></td></tr>"
            )
        parts.append("</table>")

    parts.append("<h2>Rules: matched, decided, shadowed</h2>")
    parts.append(
        "<p class='meta'>A customer matching several rules of a slot gets the highest priority "
        "(ties: the rule listed first). <em>Shadowed</em>: matched, but a higher-ranked rule of "
        "the same slot won.</p>"
    )
    parts.append(
        "<table class='rules'><tr><th>rule</th><th>slot</th><th>priority</th><th>audience</th>"
        "<th>matched</th><th>decided</th><th>shadowed</th><th>mostly shadowed by</th></tr>"
    )
    for rule in rules:
        st = stats.get(rule["rule_id"], {})
        by = [o for o in overlap if o["rule_id"] == rule["rule_id"]]
        by_text = ", ".join(
            f"<code>{_e(o['shadowed_by_rule_id'])}</code> ({_n(o['customers'])})" for o in by[:3]
        )
        shadow_share = _pct(st.get("shadowed_customers") or 0, st.get("matched_customers"))
        state = rule.get("experiment_state")
        note = (f"<br><span class='tag'>experiment {_e(rule['experiment_id'])}: {_e(state)}</span>"
                if rule.get("experiment_id") else "")
        parts.append(
            f"<tr><td><code>{_e(rule['rule_id'])}</code>{note}</td><td>{_e(rule['slot_id'])}</td>"
            f"<td class='n'>{_e(rule['priority'])}</td><td><code>{_e(rule['audience'])}</code></td>"
            f"<td class='n'>{_n(st.get('matched_customers'))}</td>"
            f"<td class='n'>{_n(st.get('decided_customers'))}</td>"
            f"<td class='n'>{_n(st.get('shadowed_customers'))} "
            f"<span class='muted'>{shadow_share}</span></td>"
            f"<td>{by_text or '<span class=muted>-</span>'}</td></tr>"
        )
    parts.append("</table>")

    parts.append("<h2>Experiments</h2>")
    experiments = _rows(
        con,
        """
        select e.experiment_id, e.rule_id, e.slot_id, e.content_id, e.default_content_id,
               e.control_share, e.start_date, e.end_date, e.window_days,
               count(a.customer_id) as assigned,
               count(*) filter (where a.variant = 'treatment') as treatment,
               count(*) filter (where a.variant = 'control') as control,
               min(a.assigned_at) as first_assigned, max(a.assigned_at) as last_assigned
        from personalisation.experiments e
        left join personalisation.experiment_assignments a using (experiment_id)
        group by all
        order by e.start_date, e.experiment_id
        """,
    )
    if not experiments:
        parts.append("<p class='muted'>No experiment defined.</p>")
    else:
        parts.append(
            "<table><tr><th>experiment</th><th>rule / slot</th><th>treatment content</th>"
            "<th>window</th><th>control share</th><th>assigned</th><th>treatment</th>"
            "<th>control</th><th>observed control share</th></tr>"
        )
        for x in experiments:
            end = x["end_date"] or "open"
            parts.append(
                f"<tr><td><code>{_e(x['experiment_id'])}</code><br><span class='muted'>"
                f"{_e(x['start_date'])} → {_e(end)}</span></td>"
                f"<td><code>{_e(x['rule_id'])}</code> / {_e(x['slot_id'])}</td>"
                f"<td><code>{_e(x['content_id'])}</code> vs "
                f"<code>{_e(x['default_content_id'])}</code></td>"
                f"<td class='n'>{_e(x['window_days'])} d</td>"
                f"<td class='n'>{x['control_share']:.0%}</td>"
                f"<td class='n'>{_n(x['assigned'])}</td><td class='n'>{_n(x['treatment'])}</td>"
                f"<td class='n'>{_n(x['control'])}</td>"
                f"<td class='n'>{_pct(x['control'], x['assigned'])}</td></tr>"
            )
        parts.append("</table>")
        parts.append(
            "<p class='meta'>Assignments are sticky: a customer keeps the variant of the first "
            "run in which they matched, whatever later runs or rule edits say. Results (lift, "
            "confidence intervals) are on the experiments page.</p>"
        )
    return _page("Personalisation", meta, "\n".join(parts))


def _page(title: str, meta: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='meta'>{meta}</p>{body}</body></html>\n"
    )


def write_report(con: duckdb.DuckDBPyConnection, *, settings: Settings | None = None) -> Path:
    """Render and atomically write ``personalisation_reports_dir/index.html``."""
    settings = settings or get_settings()
    out_dir = settings.personalisation_reports_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "index.html"
    tmp = out_dir / f".index.{os.getpid()}.tmp"
    tmp.write_text(render(con), encoding="utf-8")
    os.replace(tmp, target)
    return target
