"""Synthetic ``marts.customer_features`` with planted personas (tests and benchmarks).

Not used by the pipeline. Shaped exactly like the dbt mart (same columns,
types and null conventions) so clustering can be developed, tested and timed
before/without the dbt models.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from segment_warehouse.clustering.features import FEATURE_NAMES

# persona -> share of customers
PERSONAS: dict[str, float] = {
    "high_value_loyal": 0.10,
    "discount_driven": 0.15,
    "browsers_no_purchase": 0.20,
    "lapsed": 0.18,
    "new": 0.10,
    "weekend_buyers": 0.13,
    "mobile_first": 0.14,
}


def make_customer_features(
    n: int, *, seed: int = 7, consent_false_share: float = 0.1, id_offset: int = 0
) -> pd.DataFrame:
    """One row per customer with the mart's columns plus ``persona`` (ground truth)."""
    rng = np.random.default_rng(seed)
    names = list(PERSONAS)
    persona = rng.choice(len(names), size=n, p=np.array(list(PERSONAS.values())))
    cols: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in FEATURE_NAMES}

    def put(mask: np.ndarray, **values: np.ndarray) -> None:
        for name, v in values.items():
            cols[name][mask] = v

    def lognorm(mean: float, sigma: float, m: int) -> np.ndarray:
        return rng.lognormal(np.log(mean), sigma, m)

    for p, name in enumerate(names):
        mask = persona == p
        m = int(mask.sum())
        u = rng.uniform
        if name == "high_value_loyal":
            freq = rng.poisson(15, m) + 6
            aov = lognorm(130, 0.3, m)
            s30 = rng.poisson(9, m)
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=freq * aov,
                recency_days=u(1, 25, m),
                discount_share=rng.beta(1, 20, m),
                sessions_30d=s30,
                sessions_90d=s30 + rng.poisson(18, m),
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=rng.poisson(1, m),
                tenure_days=u(800, 2200, m),
            )
        elif name == "discount_driven":
            freq = rng.poisson(4, m) + 2
            aov = lognorm(35, 0.3, m)
            s30 = rng.poisson(3, m)
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=freq * aov,
                recency_days=u(10, 90, m),
                discount_share=rng.beta(12, 10, m),
                sessions_30d=s30,
                sessions_90d=s30 + rng.poisson(6, m),
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=rng.poisson(2, m),
                tenure_days=u(200, 1200, m),
            )
        elif name == "browsers_no_purchase":
            s30 = rng.poisson(6, m) + 1
            put(
                mask,
                frequency=np.zeros(m),
                monetary=np.zeros(m),
                sessions_30d=s30,
                sessions_90d=s30 + rng.poisson(10, m),
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=rng.poisson(6, m) + 2,
                tenure_days=u(60, 700, m),
            )
        elif name == "lapsed":
            freq = rng.poisson(1.5, m) + 1
            aov = lognorm(60, 0.4, m)
            rec = u(300, 900, m)
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=freq * aov,
                recency_days=rec,
                discount_share=rng.beta(1, 10, m),
                sessions_30d=np.zeros(m),
                sessions_90d=rng.poisson(0.2, m),
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=np.zeros(m),
                tenure_days=rec + u(100, 800, m),
            )
        elif name == "new":
            tenure = u(1, 25, m)
            ordered = rng.random(m) < 0.6
            aov = np.where(ordered, lognorm(60, 0.4, m), np.nan)
            freq = ordered.astype(float)
            s30 = rng.poisson(3, m) + 1
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=np.nan_to_num(aov),
                recency_days=np.where(ordered, tenure * rng.random(m), np.nan),
                discount_share=np.where(ordered, rng.beta(1, 10, m), np.nan),
                sessions_30d=s30,
                sessions_90d=s30,
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=rng.poisson(1, m),
                tenure_days=tenure,
            )
        elif name == "weekend_buyers":
            freq = rng.poisson(4, m) + 2
            aov = lognorm(70, 0.3, m)
            s30 = rng.poisson(3, m)
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=freq * aov,
                recency_days=u(5, 80, m),
                discount_share=rng.beta(1, 10, m),
                sessions_30d=s30,
                sessions_90d=s30 + rng.poisson(6, m),
                mobile_share=rng.beta(3, 3, m),
                weekend_share=rng.beta(25, 2, m),
                cart_adds_without_purchase=rng.poisson(1, m),
                tenure_days=u(200, 1500, m),
            )
        else:  # mobile_first
            freq = rng.poisson(3, m) + 1
            aov = lognorm(50, 0.3, m)
            s30 = rng.poisson(7, m) + 1
            put(
                mask,
                frequency=freq,
                avg_order_value=aov,
                monetary=freq * aov,
                recency_days=u(5, 100, m),
                discount_share=rng.beta(1, 10, m),
                sessions_30d=s30,
                sessions_90d=s30 + rng.poisson(12, m),
                mobile_share=rng.beta(30, 1.5, m),
                weekend_share=rng.beta(2, 5, m),
                cart_adds_without_purchase=rng.poisson(1, m),
                tenure_days=u(100, 1000, m),
            )

    views = {}
    for window in ("30d", "90d"):
        s = cols[f"sessions_{window}"]
        views[window] = s * (rng.poisson(4, n) + 1)
    cols["page_views_30d"] = views["30d"]
    cols["page_views_90d"] = np.maximum(views["90d"], views["30d"])
    # No sessions -> the mart has no device/weekday information.
    no_sessions = cols["sessions_90d"] == 0
    cols["mobile_share"][no_sessions & (cols["frequency"] == 0)] = np.nan

    r = rng.random(n)
    consent = pd.array(np.where(r < consent_false_share, False, True), dtype="boolean")
    consent[(r >= consent_false_share) & (r < consent_false_share + 0.25)] = pd.NA  # unknown
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i:08d}" for i in range(id_offset, id_offset + n)],
            "marketing_consent": consent,
            **cols,
            "persona": np.array(names, dtype=object)[persona],
        }
    )
    for c in (
        "frequency",
        "sessions_30d",
        "sessions_90d",
        "page_views_30d",
        "page_views_90d",
        "cart_adds_without_purchase",
    ):
        df[c] = df[c].astype("Int64")
    return df


def write_customer_features(con: duckdb.DuckDBPyConnection, df: pd.DataFrame) -> None:
    """(Re)create marts.customer_features from ``df`` (ground-truth column dropped)."""
    con.execute("create schema if not exists marts")
    mart = df.drop(columns=["persona"], errors="ignore")
    con.register("_synthetic_features", mart)
    try:
        con.execute(
            "create or replace table marts.customer_features as "
            "select * from _synthetic_features order by customer_id"
        )
    finally:
        con.unregister("_synthetic_features")
