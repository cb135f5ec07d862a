"""Orders from each person's latent purchase rate: history, updates and the held-back future."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from segment_tools.zone2 import names as nm
from segment_tools.zone2 import render
from segment_tools.zone2.config import ZoneConfig
from segment_tools.zone2.crm import CrmRecord
from segment_tools.zone2.people import Person


@dataclass(slots=True)
class Order:
    order_id: str
    person_id: str
    contact_id: str
    email: str
    email_kind: str  # '' | exact | case_space | plus_tag | gmail_dots | gmail_dots_tag
    order_ts: datetime
    status: str  # as first delivered
    final_status: str  # after later updates up to as_of
    currency: str
    total: float
    discount: float
    items: int
    channel: str
    updated_at: datetime
    update_ts: datetime | None  # refund / completion update, when delivered by as_of
    future: bool


def _day_of(rng: np.random.Generator, lo: date, hi: date, weekend_share: float, n: int
            ) -> list[date]:
    span = (hi - lo).days
    if n == 0 or span < 0:
        return []
    days = rng.integers(0, span + 1, size=n)
    want_weekend = rng.random(n) < weekend_share
    sat_or_sun = rng.integers(0, 2, size=n).tolist()
    weekday_back = rng.integers(0, 4, size=n).tolist()
    out = []
    for i, (d, w) in enumerate(zip(days.tolist(), want_weekend.tolist(), strict=True)):
        day = lo + timedelta(days=d)
        wd = day.weekday()
        if w and wd < 5:
            day = day + timedelta(days=5 - wd + sat_or_sun[i])
        elif not w and wd >= 5:
            day = day - timedelta(days=wd - 4 + weekday_back[i])
        out.append(min(max(day, lo), hi))
    return out


def _poisson(rng: render.FastRandom, lam: float) -> int:
    """Knuth's method: exact, and cheap for the small means of items per order."""
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _guest_email(rng: render.FastRandom, email: str, habit: str) -> tuple[str, str]:
    """The checkout email as this person tends to type it (most of the time)."""
    gmail = email.endswith("@gmail.com")
    if rng.random() < 0.2 or habit == "exact" or (habit == "gmail_dots" and not gmail):
        return email, "exact"
    if habit == "case_space":
        return render.case_space_variant(rng, email), "case_space"
    if habit == "gmail_dots":
        return render.gmail_dots(rng, email), "gmail_dots"
    if gmail and rng.random() < 0.3:
        return render.plus_tag(rng, render.gmail_dots(rng, email)), "gmail_dots_tag"
    return render.plus_tag(rng, email), "plus_tag"


class OrderIds:
    def __init__(self, rng: np.random.Generator) -> None:
        self.seq = int(rng.integers(100000, 900000))
        self.fr = render.FastRandom(rng, block=4096)

    def next(self, ts: datetime) -> str:
        self.seq += self.fr.integers(1, 4)
        return f"SO-{ts.year % 100:02d}{ts.month:02d}-{self.seq:07d}"


def make_orders(cfg: ZoneConfig, rng: np.random.Generator, persons: list[Person],
                records: list[CrmRecord], ids: OrderIds, frng: np.random.Generator,
                future_ids: OrderIds) -> list[Order]:
    """History from ``rng``; the held-back future from its own ``frng`` so that the
    landing zone is byte-identical with and without ``holdout_days``."""
    by_person: dict[str, list[CrmRecord]] = {}
    for r in records:
        by_person.setdefault(r.person_id, []).append(r)
    as_of_dt = datetime(cfg.as_of.year, cfg.as_of.month, cfg.as_of.day, tzinfo=UTC)
    orders: list[Order] = []
    fr, ffr = render.FastRandom(rng), render.FastRandom(frng)
    for p in persons:
        active = (p.last_active - p.first_seen).days + 1
        n_hist = int(rng.poisson(p.rate_per_day * active))
        if p.persona == "newcomer":
            n_hist = max(n_hist, 1)  # a newcomer is someone who just bought
        days = _day_of(rng, p.first_seen, p.last_active, p.weekend_share, n_hist)
        future_days: list[date] = []
        if cfg.holdout_days:
            n_future = int(frng.poisson(p.future_rate_per_day * cfg.holdout_days))
            future_days = _day_of(frng, cfg.as_of + timedelta(days=1),
                                  cfg.as_of + timedelta(days=cfg.holdout_days),
                                  p.weekend_share, n_future)
        recs = by_person.get(p.person_id, [])
        for day, future in [(d, False) for d in days] + [(d, True) for d in future_days]:
            g = ffr if future else fr
            ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                seconds=g.integers(7 * 3600, 23 * 3600 + 3000))
            if not future and ts >= as_of_dt:
                # history ends at the start of the as-of day
                ts = as_of_dt - timedelta(hours=g.integers(1, 12))
            orders.append(_order(cfg, g, p, recs, ts, future_ids if future else ids,
                                 future, as_of_dt))
    return orders


def _order(cfg: ZoneConfig, rng: render.FastRandom, p: Person, recs: list[CrmRecord],
           ts: datetime, ids: OrderIds, future: bool, as_of_dt: datetime) -> Order:
    dev = rng.pick(p.device_mix)
    channel = "app" if dev == 3 else ("store" if rng.random() < 0.08 else "web")
    contact_id, email, kind = "", "", ""
    if recs and rng.random() >= cfg.guest_share:
        rec = recs[0] if len(recs) == 1 or rng.random() < 0.75 else recs[
            int(rng.integers(1, len(recs)))]
        contact_id = rec.contact_id
        if rng.random() < 0.5 and rec.email_true:
            email, kind = rec.email_true, "exact"
    else:
        source = p.emails[int(rng.integers(len(p.emails)))] if p.emails else p.email
        email, kind = _guest_email(rng, source, p.email_habit)
    currency = nm.CURRENCY[p.country]
    if rng.random() < 0.04:
        # cross-border shopping in another store currency
        currency = ["USD", "EUR", "GBP"][int(rng.integers(3))]
    value_usd = p.aov_local / nm.FX_PER_USD[nm.CURRENCY[p.country]] * rng.lognormal(0, 0.35)
    total = round(max(1.0, value_usd * nm.FX_PER_USD[currency]), 2)
    discount = 0.0
    if rng.random() < p.discount_prob:
        discount = round(total * p.discount_depth * rng.uniform(0.5, 1.5), 2)
        discount = min(discount, total)
    items = 1 + _poisson(rng, max(0.2, value_usd / 45.0))
    status = final = "completed"
    update_ts: datetime | None = None
    draw = rng.random()
    if draw < 0.035:
        status = final = "cancelled"
    elif draw < 0.10:
        # refunded later: the order arrives completed and an update refunds it
        update_ts = ts + timedelta(days=int(rng.integers(2, 35)), hours=int(rng.integers(0, 24)))
        final = "refunded"
    if not future and ts > as_of_dt - timedelta(days=2) and rng.random() < 0.5:
        status = final = "pending"
        update_ts = None
    if update_ts is not None and not future and update_ts > as_of_dt:
        update_ts, final = None, status  # the refund has not happened yet by as_of
    if future:
        update_ts = None
        final = status
    return Order(
        order_id=ids.next(ts), person_id=p.person_id, contact_id=contact_id, email=email,
        email_kind=kind, order_ts=ts, status=status, final_status=final, currency=currency,
        total=total, discount=discount, items=items, channel=channel,
        updated_at=ts + timedelta(minutes=int(rng.integers(1, 30))), update_ts=update_ts,
        future=future,
    )
