"""A hand-built warehouse with the tables predictions read, and known behaviour.

Each customer has a fixed purchase rate (some never buy); orders are a Poisson
process over ``days`` of history, so recent frequency predicts the future.
Some customers refused consent; some orders are later refunded.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd


def build_warehouse(
    path: Path,
    *,
    customers: int = 1200,
    days: int = 180,
    end: date = date(2026, 10, 31),
    seed: int = 1,
) -> None:
    rng = np.random.default_rng(seed)
    start = datetime.combine(end - timedelta(days=days - 1), datetime.min.time())
    ids = [f"cust{i:05d}" for i in range(customers)]
    rate = np.where(rng.random(customers) < 0.3, 0.0, rng.gamma(0.8, 1 / 30, customers))
    consent = rng.choice([True, None, False], customers, p=[0.6, 0.25, 0.15])
    orders, sessions = [], []
    n = 0
    for i, cid in enumerate(ids):
        k = rng.poisson(rate[i] * days)
        for t in np.sort(rng.random(k) * days):
            ts = start + timedelta(days=float(t))
            n += 1
            oid = f"ORD{n:07d}"
            amount = float(rng.gamma(2.0, 40.0))
            orders.append((oid, cid, ts, "completed", amount, ts, f"f{ts:%Y%m%d}.csv", n))
            later = ts + timedelta(days=7)
            if rng.random() < 0.05 and later.date() <= end:  # refunded: a second version
                orders.append((oid, cid, ts, "refunded", amount, later, f"f{later:%Y%m%d}.csv", n))
        for t in rng.random(rng.poisson(rate[i] * days * 2 + 1)) * days:
            ts = start + timedelta(days=float(t))
            sessions.append((f"s{len(sessions)}", cid, ts, ts.date(), 3, 1, 0, bool(i % 2)))
    o = pd.DataFrame(
        orders,
        columns=["order_id", "customer_id", "order_ts", "status", "total_amount_reporting",
                 "updated_at", "_source_file", "_line_number"],
    )  # fmt: skip
    o["discount_amount_reporting"] = 0.0
    contacts = pd.DataFrame(
        {
            "contact_id": [f"C{c}" for c in ids],
            "customer_id": ids,
            "marketing_consent": consent,
            "created_at": start - timedelta(days=30),
            "updated_at": start - timedelta(days=30),
            "_loaded_at": start,
            "_source_file": "crm0.csv",
            "_line_number": range(customers),
        }
    )
    s = pd.DataFrame(
        sessions,
        columns=["session_id", "customer_id", "session_start_at", "session_date",
                 "page_views_count", "products_added_count", "orders_completed_count", "is_mobile"],
    )  # fmt: skip
    con = duckdb.connect(str(path))
    try:
        for schema in ("staging", "marts", "segments"):
            con.execute(f"create schema if not exists {schema}")
        con.register("o", o)
        con.register("c", contacts)
        con.register("s", s)
        con.execute("create table staging.stg_transactions__orders as select * from o")
        con.execute(
            "create table staging.stg_crm__contacts as select contact_id, marketing_consent, "
            "created_at, updated_at, _loaded_at, _source_file, _line_number from c"
        )
        con.execute(
            """
            create table marts.identity_map as
            select distinct 'transactions' as source, order_id as source_id, customer_id from o
            union all select 'crm', contact_id, customer_id from c
            """
        )
        con.execute("create table marts.fct_sessions as select * from s")
        con.execute(
            """
            create table marts.customer_profiles as
            select c.customer_id, c.marketing_consent,
                   (select count(*) from (
                       select order_id, arg_max(status, updated_at) as st from o
                       where o.customer_id = c.customer_id group by order_id)
                    where st = 'completed') as orders_count
            from c
            """
        )
    finally:
        con.close()
