"""Point-in-time features over the warehouse's history, as of a cut-off day.

The features follow the marts' definitions (``int_customers_aggregated`` /
``customer_features``: recency, frequency, monetary, AOV, discount share,
sessions/page views in 30/90 days, cart adds without purchase, tenure) but are
computed from the versioned history as it stood at the end of the cut-off day:

- orders: every version in ``staging.stg_transactions__orders`` with
  ``updated_at`` on or before the cut-off; of those, the version the marts
  would pick (delivery order, then updated_at, then line) — so a refund issued
  after the cut-off does not leak into it; only orders placed by then count;
- consent: the latest ``staging.stg_crm__contacts`` version known at the
  cut-off, the customer's latest non-null value winning (as the marts do);
- sessions: ``marts.fct_sessions`` started on or before the cut-off.

Customers are the warehouse's current unified ids (``marts.identity_map``),
so erased people, whose rows erasure deleted, cannot appear. All of it is
one set-based DuckDB query per cut-off (``cutoff`` is a bound parameter), over
every customer (scoring, a backtest) or over a sample of them (training rows);
:func:`population_at` says who is there, cheaply, so a sample can be drawn first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

# (name, description) — the model's inputs, in order.
FEATURES: tuple[tuple[str, str], ...] = (
    ("recency_days", "days since the last completed order (null: never ordered)"),
    ("frequency", "completed orders"),
    ("monetary", "completed revenue, reporting currency"),
    ("avg_order_value", "monetary / frequency (null: never ordered)"),
    ("orders_30d", "completed orders in the 30 days up to the cut-off"),
    ("orders_90d", "completed orders in the 90 days up to the cut-off"),
    ("revenue_90d", "completed revenue in the 90 days up to the cut-off"),
    ("days_since_first_order", "days since the first completed order (null: never ordered)"),
    ("mean_days_between_orders", "(last - first completed order) / (frequency - 1)"),
    ("refunded_orders", "orders refunded or cancelled by the cut-off"),
    ("discount_share", "discount / (revenue + discount) of completed orders"),
    ("sessions_30d", "web/app sessions in the 30 days up to the cut-off"),
    ("sessions_90d", "web/app sessions in the 90 days up to the cut-off"),
    ("page_views_30d", "page views in the 30 days up to the cut-off"),
    ("days_since_last_session", "days since the last session (null: none)"),
    ("cart_adds_without_purchase", "products added in sessions without an order"),
    ("page_views_90d", "page views in the 90 days up to the cut-off"),
    ("mobile_share", "share of sessions on a mobile device"),
    ("weekend_share", "share of completed orders (else of sessions) on a weekend"),
    ("tenure_days", "days since first seen (contact, order or session)"),
    ("consent_known", "1 if marketing consent is true at the cut-off, 0 if unknown"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)

# The identity map names a customer's orders and contacts; an order without a
# row there (quarantined, erased) has no customer and is ignored.
# {orders_of}, {contacts_of}, {sessions_of} and {customers_of} are empty, or (for a
# subset of customers) _RESTRICT's filters: the subset's orders, contacts and
# sessions are narrowed before the version windows, which partition by order and
# contact, so each customer's features equal those of the unrestricted query.
_ORDERS_AND_CONTACTS_SQL = """
params as (select cast($cutoff as date) as cutoff),
order_versions as (
    select o.order_id, o.order_ts, o.status, o.total_amount_reporting,
           o.discount_amount_reporting
    from staging.stg_transactions__orders o, params
    where cast(o.updated_at as date) <= params.cutoff
      and cast(o.order_ts as date) <= params.cutoff{orders_of}
    qualify row_number() over (
        partition by o.order_id
        order by o._source_file desc, o.updated_at desc nulls last, o._line_number desc
    ) = 1
),
orders as (
    select m.customer_id, v.*, v.status = 'completed' as is_completed
    from order_versions v
    join marts.identity_map m on m.source = 'transactions' and m.source_id = v.order_id
),
contact_versions as (
    select c.contact_id, c.marketing_consent, c.updated_at, c.created_at
    from staging.stg_crm__contacts c, params
    where cast(c.updated_at as date) <= params.cutoff{contacts_of}
    qualify row_number() over (
        partition by c.contact_id
        order by c.updated_at desc nulls last, c._loaded_at desc, c._source_file desc,
                 c._line_number desc
    ) = 1
),
contacts as (
    select m.customer_id,
           arg_max(v.marketing_consent, struct_pack(u := v.updated_at, c := v.contact_id))
               filter (where v.marketing_consent is not null) as marketing_consent,
           min(coalesce(v.created_at, v.updated_at)) as first_contact_at
    from contact_versions v
    join marts.identity_map m on m.source = 'crm' and m.source_id = v.contact_id
    group by m.customer_id
),
"""

_POINT_IN_TIME_SQL = (
    "with"
    + _ORDERS_AND_CONTACTS_SQL
    + """
order_measures as (
    select o.customer_id,
        count(*) filter (where is_completed) as frequency,
        coalesce(sum(total_amount_reporting) filter (where is_completed), 0) as monetary,
        coalesce(sum(discount_amount_reporting) filter (where is_completed), 0) as discount,
        min(order_ts) filter (where is_completed) as first_order_at,
        max(order_ts) filter (where is_completed) as last_order_at,
        count(*) filter (where is_completed and cast(order_ts as date) > p.cutoff - 30)
            as orders_30d,
        count(*) filter (where is_completed and cast(order_ts as date) > p.cutoff - 90)
            as orders_90d,
        coalesce(sum(total_amount_reporting) filter (
            where is_completed and cast(order_ts as date) > p.cutoff - 90), 0) as revenue_90d,
        count(*) filter (where status in ('refunded', 'cancelled')) as refunded_orders,
        count(*) filter (where is_completed and isodow(order_ts) in (6, 7)) as weekend_orders,
        min(order_ts) as first_any_order_at
    from orders o, params p
    group by o.customer_id
),
session_measures as (
    select s.customer_id,
        count(*) filter (where s.session_date > p.cutoff - 30) as sessions_30d,
        count(*) filter (where s.session_date > p.cutoff - 90) as sessions_90d,
        coalesce(sum(s.page_views_count) filter (where s.session_date > p.cutoff - 30), 0)
            as page_views_30d,
        coalesce(sum(s.page_views_count) filter (where s.session_date > p.cutoff - 90), 0)
            as page_views_90d,
        count(*) as sessions_count,
        count(*) filter (where s.is_mobile) as mobile_sessions,
        count(*) filter (where isodow(s.session_start_at) in (6, 7)) as weekend_sessions,
        max(s.session_start_at) as last_session_at,
        min(s.session_start_at) as first_session_at,
        coalesce(sum(s.products_added_count) filter (where s.orders_completed_count = 0), 0)
            as cart_adds_without_purchase
    from marts.fct_sessions s, params p
    where s.customer_id is not null and s.session_date <= p.cutoff{sessions_of}
    group by s.customer_id
),
known as (
    select customer_id from contacts
    union
    select customer_id from order_measures
)
select
    k.customer_id,
    c.marketing_consent,
    cast(date_diff('day', cast(om.last_order_at as date), p.cutoff) as double) as recency_days,
    cast(coalesce(om.frequency, 0) as double) as frequency,
    cast(coalesce(om.monetary, 0) as double) as monetary,
    cast(case when om.frequency > 0 then om.monetary / om.frequency end as double)
        as avg_order_value,
    cast(coalesce(om.orders_30d, 0) as double) as orders_30d,
    cast(coalesce(om.orders_90d, 0) as double) as orders_90d,
    cast(coalesce(om.revenue_90d, 0) as double) as revenue_90d,
    cast(date_diff('day', cast(om.first_order_at as date), p.cutoff) as double)
        as days_since_first_order,
    cast(case when om.frequency > 1
         then date_diff('day', cast(om.first_order_at as date), cast(om.last_order_at as date))
              / (om.frequency - 1) end as double) as mean_days_between_orders,
    cast(coalesce(om.refunded_orders, 0) as double) as refunded_orders,
    cast(case when om.monetary + om.discount > 0
         then om.discount / (om.monetary + om.discount) else 0 end as double) as discount_share,
    cast(coalesce(sm.sessions_30d, 0) as double) as sessions_30d,
    cast(coalesce(sm.sessions_90d, 0) as double) as sessions_90d,
    cast(coalesce(sm.page_views_30d, 0) as double) as page_views_30d,
    cast(date_diff('day', cast(sm.last_session_at as date), p.cutoff) as double)
        as days_since_last_session,
    cast(coalesce(sm.cart_adds_without_purchase, 0) as double) as cart_adds_without_purchase,
    cast(coalesce(sm.page_views_90d, 0) as double) as page_views_90d,
    cast(case when sm.sessions_count > 0 then sm.mobile_sessions / sm.sessions_count else 0 end
         as double) as mobile_share,
    cast(case when om.frequency > 0 then om.weekend_orders / om.frequency
              when sm.sessions_count > 0 then sm.weekend_sessions / sm.sessions_count
              else 0 end as double) as weekend_share,
    cast(greatest(date_diff('day', cast(least(c.first_contact_at, om.first_any_order_at,
                                               sm.first_session_at) as date), p.cutoff), 0)
         as double) as tenure_days,
    cast(case when c.marketing_consent then 1 else 0 end as double) as consent_known
from known k
cross join params p
left join contacts c using (customer_id)
left join order_measures om using (customer_id)
left join session_measures sm using (customer_id)
{customers_of}
"""
)

# Who can be a training row at a cut-off, without the features: known customers,
# whether they had refused consent then, and whether they had bought by then
# (the churn population). Same definitions as _POINT_IN_TIME_SQL.
_POPULATION_SQL = (
    "with"
    + _ORDERS_AND_CONTACTS_SQL
    + """
buyers as (select distinct customer_id from orders where is_completed),
known as (
    select customer_id from contacts
    union
    select customer_id from orders
)
select k.customer_id,
       coalesce(not c.marketing_consent, false) as refused_consent,
       b.customer_id is not null as is_buyer
from known k
left join contacts c using (customer_id)
left join buyers b using (customer_id)
"""
)

_SUBSET = "_pit_customers"  # the registered frame of customer ids (restricted queries)
_RESTRICT = {
    "orders_of": f"""
      and o.order_id in (select m.source_id from marts.identity_map m
                         where m.source = 'transactions'
                           and m.customer_id in (select customer_id from {_SUBSET}))""",
    "contacts_of": f"""
      and c.contact_id in (select m.source_id from marts.identity_map m
                           where m.source = 'crm'
                             and m.customer_id in (select customer_id from {_SUBSET}))""",
    "sessions_of": f" and s.customer_id in (select customer_id from {_SUBSET})",
    "customers_of": f"where k.customer_id in (select customer_id from {_SUBSET})",
}
_UNRESTRICTED = dict.fromkeys(_RESTRICT, "")

# Outcomes in (cutoff, cutoff + days]: completed orders, judged by the versions
# known at the end of the window (a refund inside the window un-completes it).
_LABEL_SQL = """
with
params as (select cast($cutoff as date) as cutoff, cast($cutoff as date) + $days as horizon),
v as (
    select o.order_id, o.order_ts, o.status, o.total_amount_reporting
    from staging.stg_transactions__orders o, params p
    where cast(o.updated_at as date) <= p.horizon
      and cast(o.order_ts as date) > p.cutoff and cast(o.order_ts as date) <= p.horizon
    qualify row_number() over (
        partition by o.order_id
        order by o._source_file desc, o.updated_at desc nulls last, o._line_number desc
    ) = 1
)
select m.customer_id, count(*) as orders, sum(v.total_amount_reporting) as revenue
from v join marts.identity_map m on m.source = 'transactions' and m.source_id = v.order_id
where v.status = 'completed'
group by m.customer_id
"""


@dataclass(frozen=True)
class HistoryBounds:
    """First/last day with orders, first day with a session (None: none)."""

    first_day: date | None
    last_day: date | None
    first_session_day: date | None = None


def history_bounds(con: duckdb.DuckDBPyConnection) -> HistoryBounds:
    first, last = con.execute(
        "select min(cast(order_ts as date)), max(cast(order_ts as date)) "
        "from staging.stg_transactions__orders"
    ).fetchall()[0]
    session = con.execute(
        "select min(session_date) from marts.fct_sessions where customer_id is not null"
    ).fetchall()[0][0]
    return HistoryBounds(first, last, session)


def features_at(
    con: duckdb.DuckDBPyConnection, cutoff: date, customers: pd.Series | None = None
) -> pd.DataFrame:
    """One row per customer known at the end of ``cutoff``: id, consent then, features.
    With ``customers``, only those of them (the same values; the query reads only
    their orders, contacts and sessions)."""
    if customers is None:
        df = con.execute(_POINT_IN_TIME_SQL.format(**_UNRESTRICTED), {"cutoff": cutoff}).df()
    else:
        subset = pd.DataFrame({"customer_id": pd.Series(customers, dtype=object).unique()})
        con.register(_SUBSET, subset)
        try:
            df = con.execute(_POINT_IN_TIME_SQL.format(**_RESTRICT), {"cutoff": cutoff}).df()
        finally:
            con.unregister(_SUBSET)
    return df.sort_values("customer_id", kind="stable").reset_index(drop=True)


def population_at(con: duckdb.DuckDBPyConnection, cutoff: date) -> pd.DataFrame:
    """Customers known at the end of ``cutoff`` (those of :func:`features_at`), sorted:
    customer_id, refused_consent (consent false then), is_buyer (a completed order by then)."""
    df = con.execute(_POPULATION_SQL.format(**_UNRESTRICTED), {"cutoff": cutoff}).df()
    return df.sort_values("customer_id", kind="stable").reset_index(drop=True)


def labels_after(con: duckdb.DuckDBPyConnection, cutoff: date, days: int) -> pd.DataFrame:
    """customer_id, orders, revenue: completed orders placed in (cutoff, cutoff + days]."""
    return con.execute(_LABEL_SQL, {"cutoff": cutoff, "days": int(days)}).df()
