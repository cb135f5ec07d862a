"""End-to-end check of the experiment readout on data with a known answer.

Starting from a warehouse that a pipeline run at ``--start`` has built (or
building it: without ``--skip-base-run`` it runs ``segment_warehouse.cli run
--date START`` over the landing zone first), this harness

1. writes a content-rules file with two experiments over every consenting
   customer - ``planted_lift`` (slot home_hero) and ``null_effect`` (slot
   email_banner, unequal control share) - and runs ``decide()`` at START, so the
   assignments come from the product's own sticky bucketing;
2. delivers new orders as a landing-zone file (``transactions/*.csv``, DESIGN.md
   section 3, ``contact_id`` = the customer's CRM contact from
   ``marts.identity_map``): a customer converts within the window with a
   probability that depends on their pre-period orders and is multiplied by
   ``1 + lift`` in the planted experiment's treatment arm only. As decoys that a
   correct readout must ignore, the null experiment's treatment arm also gets
   refunded orders inside the window and completed orders the day after it;
3. runs the pipeline at START + window_days (through Airflow), then ``decide()``
   and ``measure()`` at that date and publishes the snapshot;
4. checks the published ``personalisation.experiment_results``: the planted
   lift lies in its 95 % interval, the null experiment declares no effect
   overall or in any segment, no slice has a sample ratio mismatch, the
   START assignments are unchanged, and a second ``measure()`` gives identical
   rows.

Prints a JSON summary and exits 1 when a check fails. Uses the SEGMENTS_*
variables like the pipeline does.

    python -m segment_tools.planted_experiment --start 2026-11-22 --lift 0.3
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from segment_warehouse.config import Settings, get_settings

PLANTED = "planted_lift"
NULL = "null_effect"
WINDOW_DAYS = 14
SHARES = {PLANTED: 0.5, NULL: 0.3}  # control shares written into the rules file


def bucket(experiment_id: str, customer_id: str) -> float:
    """The assignment rule of DESIGN.md / decide(): sha256 prefix over 16^8."""
    digest = hashlib.sha256(f"{experiment_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 16**8


def rules_yaml(start: dt.date, window_days: int) -> str:
    return f"""# Written by segment_tools.planted_experiment: two experiments over everyone.
slots:
  - id: home_hero
    default_content: hero_generic
  - id: email_banner
    default_content: banner_newsletter
rules:
  - id: planted_everyone
    slot: home_hero
    priority: 10
    audience: "orders_count >= 0"
    content: hero_planted
    experiment:
      id: {PLANTED}
      control_share: {SHARES[PLANTED]}
      start: {start.isoformat()}
      window_days: {window_days}
  - id: null_everyone
    slot: email_banner
    priority: 10
    audience: "orders_count >= 0"
    content: banner_null
    experiment:
      id: {NULL}
      control_share: {SHARES[NULL]}
      start: {start.isoformat()}
      window_days: {window_days}
"""


def _run_pipeline(day: dt.date, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", day.isoformat()]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def _assignments(settings: Settings) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        return con.execute(
            "select experiment_id, customer_id, variant, assigned_at, segment_name_at_assignment "
            "from personalisation.experiment_assignments "
            "where experiment_id in (?, ?) order by all",
            [PLANTED, NULL],
        ).fetchall()
    finally:
        con.close()


def assigned_people(settings: Settings, start: dt.date, window_days: int) -> list[tuple[Any, ...]]:
    """(customer_id, contact_id, planted variant, null variant, pre-period orders,
    planted segment, null segment) of everyone assigned at ``start``."""
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        return con.execute(
            """
            with assigned as (
                select customer_id,
                       max(case when experiment_id = ? then variant end) as planted_variant,
                       max(case when experiment_id = ? then variant end) as null_variant,
                       max(case when experiment_id = ? then segment_name_at_assignment end)
                           as planted_segment,
                       max(case when experiment_id = ? then segment_name_at_assignment end)
                           as null_segment
                from personalisation.experiment_assignments
                where experiment_id in (?, ?) and assigned_at = ?
                group by customer_id
            ),
            contact as (
                select customer_id, min(source_id) as contact_id
                from marts.identity_map where source = 'crm' group by customer_id
            ),
            pre as (
                select customer_id, count(*) as pre_orders
                from marts.fct_orders
                where is_completed and cast(order_ts as date) > ? - ?
                  and cast(order_ts as date) <= ?
                group by customer_id
            )
            select a.customer_id, c.contact_id, a.planted_variant, a.null_variant,
                   coalesce(p.pre_orders, 0), a.planted_segment, a.null_segment
            from assigned a
            join contact c using (customer_id)
            left join pre p using (customer_id)
            order by a.customer_id
            """,
            [PLANTED, NULL, PLANTED, NULL, PLANTED, NULL, start, start, window_days, start],
        ).fetchall()
    finally:
        con.close()


def conversion_probability(
    pre_orders: int,
    planted_variant: str | None,
    *,
    lift: float,
    base_rate: float,
    habit_bump: float,
) -> float:
    """The planted truth: pre-period buyers convert more; only the planted treatment
    arm is multiplied by 1 + lift; the null experiment's variant plays no part."""
    p = base_rate + (habit_bump if pre_orders > 0 else 0.0)
    return p * (1.0 + lift) if planted_variant == "treatment" else p


def write_orders(
    settings: Settings,
    start: dt.date,
    people: list[tuple[Any, ...]],
    *,
    lift: float,
    window_days: int,
    seed: int,
    base_rate: float,
    habit_bump: float,
) -> tuple[Path, dict[str, int]]:
    """Deliver the planted orders as one transactions CSV; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    counts = {"customers": len(people), "converters": 0, "decoy_refunds": 0, "decoy_late": 0}

    def order(contact_id: str, day_offset: int, status: str, tag: str) -> None:
        ts = dt.datetime.combine(start + dt.timedelta(days=day_offset), dt.time()) + dt.timedelta(
            seconds=int(rng.integers(0, 86_400))
        )
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        oid = "PLT-" + hashlib.sha256(f"{seed}:{contact_id}:{tag}".encode()).hexdigest()[:12]
        amount = f"{rng.gamma(2.0, 35.0) + 5:.2f}"
        rows.append([oid, contact_id, "", stamp, status, "USD", amount, "0.00", "1", "web", stamp])

    for _cid, contact_id, planted_variant, null_variant, pre_orders, *_segments in people:
        p = conversion_probability(
            pre_orders, planted_variant, lift=lift, base_rate=base_rate, habit_bump=habit_bump
        )
        if rng.random() < p:
            counts["converters"] += 1
            order(contact_id, int(rng.integers(1, window_days + 1)), "completed", "conv1")
            if rng.random() < 0.2:
                order(contact_id, int(rng.integers(1, window_days + 1)), "completed", "conv2")
        if null_variant == "treatment":
            # decoys: a refund inside the window and a completed order one day too late
            if rng.random() < 0.15:
                counts["decoy_refunds"] += 1
                order(contact_id, int(rng.integers(1, window_days + 1)), "refunded", "refund")
            if rng.random() < 0.15:
                counts["decoy_late"] += 1
                order(contact_id, window_days + 1, "completed", "late")
    target = settings.landing_dir / "transactions" / f"orders_planted_{start.isoformat()}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "order_id",
                "contact_id",
                "email",
                "order_ts",
                "status",
                "currency",
                "total_amount",
                "discount_amount",
                "items_count",
                "channel",
                "updated_at",
            ]
        )
        writer.writerows(rows)
    counts["orders_written"] = len(rows)
    return target, counts


def redraw_rates(
    people: list[tuple[Any, ...]],
    *,
    lift: float,
    base_rate: float,
    habit_bump: float,
    redraws: int,
    seed: int,
) -> dict[str, float]:
    """Monte-Carlo over the same assignments: redraw who converts ``redraws`` times
    and read each draw out with the product's statistics and decision rule (CUPED
    on pre-period orders when it narrows the interval; segments Holm-adjusted
    behind the "all" gatekeeper). How often the published checks pass by design.

    The assignment is held fixed, so the arms' pre-period mix is too: the lift
    that this particular split implies (``conditional_true_lift``) differs from
    the planted one by the chance imbalance, which CUPED removes.
    """
    from segment_warehouse.experiments import stats

    rng = np.random.default_rng(seed + 1_000_003)
    p = np.array(
        [
            conversion_probability(
                r[4], r[2], lift=lift, base_rate=base_rate, habit_bump=habit_bump
            )
            for r in people
        ]
    )
    pre = np.array([float(r[4]) for r in people])
    arms = {
        exp: (
            np.array([r[col] == "treatment" for r in people]),
            np.array([r[seg] or "(no segment)" for r in people]),
        )
        for exp, col, seg in ((PLANTED, 2, 5), (NULL, 3, 6))
    }
    planted_treated = arms[PLANTED][0]
    conditional = float(p[planted_treated].mean() / p[~planted_treated].mean() - 1)

    def decision(conv: np.ndarray, t: np.ndarray, c: np.ndarray) -> stats.LiftEstimate:
        raw = stats.relative_lift(conv[t], conv[c])
        adj = stats.cuped_lift(conv[t], conv[c], pre[t], pre[c])
        if adj is not None and adj.estimate.relative_se is not None and raw.relative_se is not None:
            return adj.estimate if adj.estimate.relative_se < raw.relative_se else raw
        return raw

    def covers(est: stats.LiftEstimate, value: float) -> bool:
        return (
            est.ci_low is not None
            and est.ci_high is not None
            and (est.ci_low <= value <= est.ci_high)
        )

    hits = dict.fromkeys(
        ("raw_covers", "cuped_covers", "decision_covers", "detected", "null_all", "null_any"), 0
    )
    for _ in range(redraws):
        conv = (rng.random(p.size) < p).astype(float)
        for exp, (treated, segment) in arms.items():
            overall = decision(conv, treated, ~treated)
            seg_ps = [
                decision(conv, (segment == name) & treated, (segment == name) & ~treated).p_value
                for name in sorted(set(segment))
            ]
            claims = [overall.p_value, *stats.gatekept_holm(overall.p_value, seg_ps)]
            if exp == PLANTED:
                raw = stats.relative_lift(conv[treated], conv[~treated])
                adj = stats.cuped_lift(conv[treated], conv[~treated], pre[treated], pre[~treated])
                hits["raw_covers"] += covers(raw, lift)
                hits["cuped_covers"] += adj is not None and covers(adj.estimate, lift)
                hits["decision_covers"] += covers(overall, lift)
                hits["detected"] += overall.p_value is not None and overall.p_value < stats.ALPHA
            else:
                hits["null_all"] += overall.p_value is not None and overall.p_value < stats.ALPHA
                hits["null_any"] += any(q is not None and q < stats.ALPHA for q in claims)
    return {
        "redraws": redraws,
        "conditional_true_lift": round(conditional, 4),
        "planted_unadjusted_ci_covers_planted": hits["raw_covers"] / redraws,
        "planted_cuped_ci_covers_planted": hits["cuped_covers"] / redraws,
        "planted_decision_ci_covers_planted": hits["decision_covers"] / redraws,
        "planted_effect_detected": hits["detected"] / redraws,
        "null_all_false_positive": hits["null_all"] / redraws,
        "null_any_slice_false_positive": hits["null_any"] / redraws,
    }


def _published_results(settings: Settings) -> list[dict[str, Any]]:
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        cur = con.execute(
            "select * from personalisation.experiment_results "
            "where experiment_id in (?, ?) order by experiment_id, segment, variant",
            [PLANTED, NULL],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", required=True, help="as-of date of the assignment run")
    parser.add_argument("--lift", type=float, default=0.3, help="planted relative lift")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base-rate", type=float, default=0.08)
    parser.add_argument(
        "--habit-bump",
        type=float,
        default=0.20,
        help="extra conversion probability for pre-period buyers",
    )
    parser.add_argument(
        "--redraws",
        type=int,
        default=200,
        help="Monte-Carlo redraws of the conversions over the same assignments",
    )
    parser.add_argument(
        "--skip-base-run", action="store_true", help="the warehouse is already built as of --start"
    )
    args = parser.parse_args(argv)
    start = dt.date.fromisoformat(args.start)
    end = start + dt.timedelta(days=WINDOW_DAYS)

    from segment_warehouse.experiments import measure
    from segment_warehouse.personalisation import decide
    from segment_warehouse.publish import publish_snapshot

    settings = get_settings()
    rules_path = settings.warehouse_dir / "planted_content_rules.yml"
    rules_path.parent.mkdir(parents=True, exist_ok=True)
    rules_path.write_text(rules_yaml(start, WINDOW_DAYS), encoding="utf-8")
    # the pipeline subprocesses (and a DAG that runs decide itself) use the same rules
    os.environ["SEGMENTS_CONTENT_RULES"] = str(rules_path)
    settings = dataclasses.replace(settings, content_rules=rules_path)
    env = dict(os.environ)

    if not args.skip_base_run:
        _run_pipeline(start, env)
    decided_start = decide(run_id=f"planted-{start}", as_of=start.isoformat(), settings=settings)
    at_start = _assignments(settings)
    people = assigned_people(settings, start, WINDOW_DAYS)
    orders_file, counts = write_orders(
        settings,
        start,
        people,
        lift=args.lift,
        window_days=WINDOW_DAYS,
        seed=args.seed,
        base_rate=args.base_rate,
        habit_bump=args.habit_bump,
    )
    _run_pipeline(end, env)
    decide(run_id=f"planted-{end}", as_of=end.isoformat(), settings=settings)
    measured = measure(run_id=f"planted-{end}", as_of=end.isoformat(), settings=settings)
    publish_snapshot(run_id=f"planted-{end}", settings=settings)
    published = _published_results(settings)
    rerun = measure(run_id=f"planted-{end}-rerun", as_of=end.isoformat(), settings=settings)
    publish_snapshot(run_id=f"planted-{end}-rerun", settings=settings)
    republished = _published_results(settings)
    at_end = _assignments(settings)

    by_key = {(r["experiment_id"], r["segment"], r["variant"]): r for r in published}
    planted = by_key[(PLANTED, "all", "treatment")]
    null = by_key[(NULL, "all", "treatment")]
    start_set = set(at_start)
    checks = {
        "planted lift inside its 95% CI": planted["lift_ci_low"]
        <= args.lift
        <= planted["lift_ci_high"],
        "planted effect declared": "treatment better" in planted["verdict"],
        "null CI covers 0": null["lift_ci_low"] <= 0 <= null["lift_ci_high"],
        "null: no effect declared in any slice": not any(
            ("treatment better" in r["verdict"] or "treatment worse" in r["verdict"])
            for r in published
            if r["experiment_id"] == NULL
        ),
        "no SRM in any slice": not any(r["srm_warning"] for r in published),
        "start assignments unchanged": start_set <= set(at_end),
        "assignments follow the sha256 bucketing rule": all(
            (bucket(eid, cid) < SHARES[eid]) == (variant == "control")
            for eid, cid, variant, *_rest in at_end
        ),
        "every start customer measured": sum(
            r["customers"] for r in published if r["segment"] == "all"
        )
        == len(at_start),
        "rerun identical": published == republished and rerun.result_rows == measured.result_rows,
    }

    def pick(row: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "customers",
            "conversions",
            "conversion_rate",
            "lift",
            "lift_ci_low",
            "lift_ci_high",
            "p_value",
            "cuped_lift",
            "cuped_ci_low",
            "cuped_ci_high",
            "decision_basis",
            "srm_p_value",
            "verdict",
        )
        return {k: row.get(k) for k in keys}

    summary = {
        "start": start.isoformat(),
        "measured_as_of": end.isoformat(),
        "planted_lift": args.lift,
        "seed": args.seed,
        "assignments_at_start": len(at_start),
        "new_assignments_at_start": decided_start.new_assignments,
        "orders_file": str(orders_file),
        "orders": counts,
        "planted": {
            "control": pick(by_key[(PLANTED, "all", "control")]),
            "treatment": pick(planted),
        },
        "null": {"control": pick(by_key[(NULL, "all", "control")]), "treatment": pick(null)},
        "report": measured.report_path,
        "monte_carlo": redraw_rates(
            people,
            lift=args.lift,
            base_rate=args.base_rate,
            habit_bump=args.habit_bump,
            redraws=args.redraws,
            seed=args.seed,
        ),
        "checks": checks,
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
