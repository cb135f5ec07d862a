"""Orders, sessions and analytics events for a chunk of persons (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import vocab as V
from .population import KEYS_PER_PERSON, Population
from .timeline import Timeline

DAY = 86_400_000
ORDER_KEYS_PER_PERSON = 512  # order key = pid * 512 + k; k >= 400 reserved for delta days
RATES = np.array([V.RATE_TO_USD[c[3]] for c in V.COUNTRIES] + [1.0])  # last = USD
USD = len(V.COUNTRIES)
BOT_KEY_BASE = 1 << 50


@dataclass
class Orders:
    person: np.ndarray  # local person index
    key: np.ndarray
    ts: np.ndarray
    contact_key: np.ndarray  # -1 = guest checkout
    email_variant: np.ndarray  # -1 no email, 0 lower, 1 upper, 2 spaces
    currency: np.ndarray  # index into COUNTRIES' currency; USD = len(COUNTRIES)
    total_cents: np.ndarray
    discount_cents: np.ndarray
    items: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    updated: np.ndarray
    ts_style: np.ndarray
    is_update: np.ndarray

    def take(self, idx: np.ndarray) -> Orders:
        return Orders(**{k: v[idx].copy() for k, v in vars(self).items()})

    def concat(self, other: Orders) -> Orders:
        return Orders(**{k: np.concatenate([v, getattr(other, k)]) for k, v in vars(self).items()})

    def __len__(self) -> int:
        return len(self.key)


@dataclass
class Sessions:
    person: np.ndarray  # local person index, -1 for bots
    device_key: np.ndarray
    dev_type: np.ndarray
    dev_ua: np.ndarray  # index into USER_AGENTS[type] or BOT_USER_AGENTS for bots
    dev_ip: np.ndarray
    is_bot: np.ndarray
    user_contact: np.ndarray  # contact key when logged in, else -1
    order: np.ndarray  # order row for purchase sessions, else -1
    campaign: np.ndarray
    referrer: np.ndarray
    n_events: np.ndarray
    identify: np.ndarray


@dataclass
class Events:
    session: np.ndarray
    pos: np.ndarray  # position inside the session
    kind: np.ndarray  # EVENT_* codes
    page: np.ndarray  # PAGE_NAMES index (page events)
    product: np.ndarray
    ts: np.ndarray  # event timestamp (may be in the future)
    deliver_ts: np.ndarray  # when it was really sent: decides the file


def _uniform(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo + (rng.random(len(lo)) * np.maximum(hi - lo, 1)).astype(np.int64)


def _time_of_day(rng: np.random.Generator, ms: np.ndarray) -> np.ndarray:
    # Replace the clock with a daytime-heavy distribution (peaks mid-afternoon).
    tod = (rng.normal(15.0, 4.0, len(ms)) % 24.0) * 3_600_000
    return ms - ms % DAY + tod.astype(np.int64)


def _to_weekend(rng: np.random.Generator, ms: np.ndarray) -> np.ndarray:
    day = ms // DAY
    dow = (day + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    target = 5 + rng.integers(0, 2, len(ms))
    return ms + (target - dow) * DAY


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows repeated by counts, plus each row's 0-based position inside its group."""
    owner = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, pos


def plan_counts(rng: np.random.Generator, pop: Population, tl: Timeline,
                day_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Orders and browse sessions per person. day_fraction set = one delta day."""
    params = np.array([p[:4] for p in V.PERSONA_PARAMS])[pop.persona]
    n = pop.n
    if day_fraction is None:
        n_orders = rng.poisson(params[:, 0]) + params[:, 1].astype(np.int64)
        n_browse = rng.poisson(params[:, 2]) + params[:, 3].astype(np.int64)
        return n_orders, n_browse
    mean_o = (params[:, 0] + params[:, 1]) * day_fraction
    mean_b = (params[:, 2] + params[:, 3]) * day_fraction
    inactive = (pop.persona == V.LAPSED) | (pop.persona == V.NEW)
    mean_o[inactive] = 0.0
    mean_b[pop.persona == V.LAPSED] = 0.0
    return rng.poisson(mean_o), rng.poisson(mean_b + 0 * n)


def make_orders(rng: np.random.Generator, pop: Population, tl: Timeline, n_orders: np.ndarray,
                key_base: int = 0) -> Orders:
    person, k = _expand(n_orders)
    m = len(person)
    persona = pop.persona[person]
    lo = np.maximum(pop.first_seen[person], tl.t0)
    hi = np.full(m, tl.t1, dtype=np.int64)
    if not tl.is_delta:
        lapsed = persona == V.LAPSED
        hi[lapsed] = tl.t0 + 45 * DAY
        # Loyal customers ordered recently: their first drawn order is in the last 14 days.
        recent = (persona == V.LOYAL) & (k == 0)
        lo[recent] = tl.t1 - 14 * DAY
    ts = _time_of_day(rng, _uniform(rng, lo, hi))
    wk = persona == V.WEEKEND
    ts[wk] = _to_weekend(rng, ts[wk])
    ts = np.clip(ts, tl.t0, tl.t1 - 60_000)
    p = np.array([pp[4:8] for pp in V.PERSONA_PARAMS])[persona]
    usd_gross = p[:, 0] * np.exp(rng.normal(0, 1, m) * p[:, 1] - p[:, 1] ** 2 / 2)
    disc_share = p[:, 2] + rng.random(m) * (p[:, 3] - p[:, 2])
    disc_share[(persona != V.DISCOUNT) & (rng.random(m) < 0.7)] = 0.0
    country = pop.country[person]
    currency = np.where(rng.random(m) < 0.95, country, USD)  # some pay in USD anywhere
    rate = RATES[currency]
    gross_local = usd_gross / rate
    is_jpy = currency == 8
    step = np.where(is_jpy, 100, 1)  # yen has no minor unit
    gross_c = np.round(gross_local * 100 / step).astype(np.int64) * step
    disc_c = np.round(gross_c * disc_share / step).astype(np.int64) * step
    total_c = gross_c - disc_c
    items = 1 + rng.poisson(np.clip(usd_gross / 60.0, 0.2, 6.0))
    mobile = persona == V.MOBILE
    channel = np.where(mobile, np.where(rng.random(m) < 0.9, 1, 0),
                       rng.choice(3, m, p=[0.7, 0.15, 0.15])).astype(np.int8)
    # Who checked out: logged-in CRM contact, or a guest identified by email only.
    primary = pop.pid[person] * KEYS_PER_PERSON
    guest = (~pop.in_crm[person]) | (rng.random(m) < 0.08)
    contact_key = np.where(guest, -1, primary)
    email_variant = np.where(guest, rng.choice(3, m, p=[0.6, 0.25, 0.15]),
                             np.where(rng.random(m) < 0.7, 0, -1)).astype(np.int8)
    status = rng.choice([0, 2, 3], m, p=[0.93, 0.03, 0.04]).astype(np.int8)
    updated = ts + rng.integers(10_000, 600_000, m)
    o = Orders(
        person=person, key=pop.pid[person] * ORDER_KEYS_PER_PERSON + key_base + k, ts=ts,
        contact_key=contact_key, email_variant=email_variant, currency=currency,
        total_cents=total_c, discount_cents=disc_c, items=items, channel=channel, status=status,
        updated=updated, ts_style=rng.choice(3, m, p=[0.6, 0.25, 0.15]).astype(np.int8),
        is_update=np.zeros(m, bool),
    )
    return o


def order_updates(rng: np.random.Generator, o: Orders, tl: Timeline) -> Orders:
    """Later-file updates: pending orders settle, some completed orders are refunded."""
    m = len(o)
    settle_at = o.ts + rng.integers(1, 4, m) * DAY
    refund_at = o.ts + rng.integers(3, 30, m) * DAY
    w = tl.window_of(o.updated)
    pending = (o.status == 3) & (settle_at < tl.t1) & (tl.window_of(settle_at) > w)
    refund = (o.status == 0) & (rng.random(m) < 0.05) & (refund_at < tl.t1) & (
        tl.window_of(refund_at) > w)
    correct = (o.status == 0) & ~refund & (rng.random(m) < 0.01) & (refund_at < tl.t1) & (
        tl.window_of(refund_at) > w)
    idx = np.flatnonzero(pending | refund | correct)
    u = o.take(idx)
    u.is_update[:] = True
    pend, ref, cor = pending[idx], refund[idx], correct[idx]
    u.updated = np.where(pend, settle_at[idx], refund_at[idx])
    u.status = np.where(pend, np.where(rng.random(len(idx)) < 0.8, 0, 2),
                        np.where(ref, 1, 0)).astype(np.int8)
    # A partial refund keeps the order completed with a lower total.
    u.total_cents = np.where(cor, (u.total_cents * 0.8).astype(np.int64), u.total_cents)
    u.total_cents -= u.total_cents % np.where(u.currency == 8, 100, 1)
    return u


def make_sessions(rng: np.random.Generator, pop: Population, tl: Timeline, orders: Orders,
                  n_browse: np.ndarray, n_bots: int, bot_base: int) -> tuple[Sessions, np.ndarray]:
    """Purchase sessions (one per web/app order), browse sessions and bot sessions.

    Returns the sessions and each session's start time.
    """
    persona = pop.persona
    first_dev = np.cumsum(pop.n_devices) - pop.n_devices
    # purchase sessions
    po = np.flatnonzero(orders.channel != 2)
    p_person = orders.person[po]
    p_dev = first_dev[p_person] + rng.integers(0, 1 << 20, len(po)) % pop.n_devices[p_person]
    # browse sessions
    b_person, _ = _expand(n_browse)
    nb = len(b_person)
    lo = np.maximum(pop.first_seen[b_person], tl.t0)
    hi = np.full(nb, tl.t1, dtype=np.int64)
    if not tl.is_delta:
        hi[persona[b_person] == V.LAPSED] = tl.t0 + 60 * DAY
    b_start = _time_of_day(rng, _uniform(rng, lo, hi))
    wk = persona[b_person] == V.WEEKEND
    b_start[wk] = _to_weekend(rng, b_start[wk])
    b_start = np.clip(b_start, tl.t0, tl.t1 - 3_600_000)
    b_dev = first_dev[b_person] + rng.integers(0, 1 << 20, nb) % pop.n_devices[b_person]

    person = np.concatenate([p_person, b_person])
    dev = np.concatenate([p_dev, b_dev])
    ns = len(person)
    order = np.concatenate([po, np.full(nb, -1)])
    purchase = order >= 0
    pers = persona[person]
    # Login: purchase sessions follow the order's checkout; browsing CRM people log in often.
    login_p = np.where(pers == V.BROWSER, 0.85, 0.55) * pop.in_crm[person]
    user_contact = np.where(rng.random(ns) < login_p, pop.pid[person] * KEYS_PER_PERSON, -1)
    user_contact[purchase] = orders.contact_key[po]
    campaign = np.where(rng.random(ns) < 0.3, rng.integers(1, 5, ns), 0)
    disc = (pers == V.DISCOUNT) & (rng.random(ns) < 0.7)
    campaign[disc] = rng.choice(V.DISCOUNT_CAMPAIGNS, int(disc.sum()))
    referrer = rng.integers(0, len(V.REFERRERS), ns)
    # Browsers click through a lot more per session than anyone else.
    n_events = np.where(purchase, 4 + rng.poisson(0.3, ns),
                        np.where(pers == V.BROWSER, 2 + rng.poisson(2.5, ns),
                                 1 + rng.poisson(0.5, ns)))
    guest_purchase = purchase & (user_contact < 0)
    identify = ((user_contact >= 0) & (rng.random(ns) < 0.3)) | (
        guest_purchase & (rng.random(ns) < 0.7))
    n_events = n_events + identify
    start = np.concatenate([orders.ts[po], b_start])  # purchase: fixed up from the end later

    # Bots: their own devices, bursts of page views, never logged in.
    bot_sessions = rng.integers(3, 15, n_bots)
    bot_of, _ = _expand(bot_sessions)
    nbs = len(bot_of)
    bot_start = _uniform(rng, np.full(nbs, tl.t0), np.full(nbs, tl.t1 - 3_600_000))
    s = Sessions(
        person=np.concatenate([person, np.full(nbs, -1)]),
        device_key=np.concatenate([pop.dev_key[dev], BOT_KEY_BASE + bot_base + bot_of]),
        dev_type=np.concatenate([pop.dev_type[dev], np.ones(nbs, np.int8)]),
        dev_ua=np.concatenate([pop.dev_ua[dev], (bot_base + bot_of) % len(V.BOT_USER_AGENTS)]),
        dev_ip=np.concatenate([pop.dev_ip[dev], 0x42F90000 + (bot_base + bot_of) * 17 % 65536]),
        is_bot=np.concatenate([np.zeros(ns, bool), np.ones(nbs, bool)]),
        user_contact=np.concatenate([user_contact, np.full(nbs, -1)]),
        order=np.concatenate([order, np.full(nbs, -1)]),
        campaign=np.concatenate([campaign, np.zeros(nbs, np.int64)]),
        referrer=np.concatenate([referrer, np.zeros(nbs, np.int64)]),
        n_events=np.concatenate([n_events, rng.integers(10, 40, nbs)]),
        identify=np.concatenate([identify, np.zeros(nbs, bool)]),
    )
    return s, np.concatenate([start, bot_start])


def add_shared_devices(rng: np.random.Generator, pop: Population, s: Sessions,
                       start: np.ndarray, tl: Timeline) -> tuple[Sessions, np.ndarray, np.ndarray]:
    """A household member logs in on another member's device (one anonymousId, two contacts).

    Returns the extended sessions/starts and the device keys that are shared.
    """
    b = np.flatnonzero(pop.household_of >= 0)
    if len(b) == 0 or tl.is_delta:
        return s, start, np.zeros(0, np.int64)
    b = b[: max(1, len(b) // 3)]
    a = pop.household_of[b]
    first_dev = np.cumsum(pop.n_devices) - pop.n_devices
    dev = first_dev[a]
    per = 2
    bi = np.repeat(b, per)
    di = np.repeat(dev, per)
    m = len(bi)
    extra = Sessions(
        person=bi, device_key=pop.dev_key[di], dev_type=pop.dev_type[di], dev_ua=pop.dev_ua[di],
        dev_ip=pop.dev_ip[di], is_bot=np.zeros(m, bool),
        user_contact=pop.pid[bi] * KEYS_PER_PERSON, order=np.full(m, -1),
        campaign=np.zeros(m, np.int64), referrer=np.zeros(m, np.int64),
        n_events=2 + rng.poisson(2.0, m), identify=np.ones(m, bool),
    )
    st = _time_of_day(rng, _uniform(rng, np.full(m, tl.t0), np.full(m, tl.t1 - DAY)))
    merged = Sessions(**{k: np.concatenate([v, getattr(extra, k)]) for k, v in vars(s).items()})
    return merged, np.concatenate([start, st]), np.unique(pop.dev_key[dev])


def make_events(rng: np.random.Generator, pop: Population, s: Sessions, start: np.ndarray,
                tl: Timeline, future_rate: float) -> Events:
    sess, pos = _expand(s.n_events)
    m = len(sess)
    n = s.n_events[sess]
    purchase = s.order[sess] >= 0
    bot = s.is_bot[sess]
    persona = np.where(s.person[sess] >= 0, pop.persona[np.maximum(s.person[sess], 0)], -1)
    add_p = np.where(persona == V.BROWSER, 0.4, 0.12)
    u = rng.random(m)
    kind = np.where(u < 0.3, V.EVENT_PAGE,
                    np.where(u < 1.0 - add_p, V.EVENT_VIEWED, V.EVENT_ADDED)).astype(np.int8)
    kind[pos == 0] = V.EVENT_PAGE
    kind[purchase & (pos == n - 1)] = V.EVENT_COMPLETED
    kind[purchase & (pos == n - 2)] = V.EVENT_CHECKOUT
    kind[purchase & (pos == n - 3)] = V.EVENT_ADDED
    kind[s.identify[sess] & (pos == 1)] = V.EVENT_IDENTIFY
    kind[bot] = V.EVENT_PAGE
    page = np.where(kind == V.EVENT_PAGE, rng.choice(5, m, p=[0.25, 0.25, 0.3, 0.1, 0.1]), 2)
    page[pos == 0] = np.where(rng.random(m) < 0.5, 0, 2)[pos == 0]
    product = rng.integers(0, V.N_PRODUCTS, m)
    # Clicks a few seconds to minutes apart; bots fire every 1-5 s.
    gap = np.where(bot, rng.integers(1_000, 5_000, m), 2_000 + rng.exponential(45_000, m))
    gap = gap.astype(np.int64)
    gap[pos == 0] = 0
    cum = np.cumsum(gap)
    first_idx = np.cumsum(s.n_events) - s.n_events
    offset = cum - cum[first_idx][sess]
    total = offset[first_idx + s.n_events - 1]  # per session duration
    # Purchase sessions end exactly at the order timestamp.
    sstart = np.where(s.order >= 0, start - total, start)
    ts = sstart[sess] + offset
    deliver = ts.copy()
    fut = rng.random(m) < future_rate
    ts[fut] += rng.integers(30, 400, int(fut.sum())) * DAY
    return Events(session=sess, pos=pos, kind=kind, page=page, product=product, ts=ts,
                  deliver_ts=deliver)
