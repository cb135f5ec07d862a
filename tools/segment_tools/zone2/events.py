"""Web/app events: devices, sessions, logins, identify calls, shared devices and bots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from segment_tools.zone2 import render
from segment_tools.zone2.config import ZoneConfig
from segment_tools.zone2.crm import CrmRecord
from segment_tools.zone2.orders import Order
from segment_tools.zone2.people import Person

DEVICE_TYPES = ("desktop", "mobile", "tablet", "app")
UAS = {
    "desktop": ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/130.0.0.0 Safari/537.36",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like "
                "Gecko) Version/18.0 Safari/605.1.15",
                "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"],
    "mobile": ["Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
               "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/130.0.0.0 Mobile Safari/537.36"],
    "tablet": ["Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
               "Gecko) Version/17.7 Mobile/15E148 Safari/604.1",
               "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/129.0.0.0 Safari/537.36"],
    "app": ["ShopApp/5.12.0 (iPhone; iOS 18.1; Scale/3.00)",
            "ShopApp/5.11.3 (Linux; Android 14; SM-S918B)"],
}
BOT_UAS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
]
CATEGORIES = ("shoes", "dresses", "outdoor", "kitchen", "toys", "beauty", "electronics")
SHOP = "https://shop.example.com"


@dataclass(slots=True)
class Device:
    anonymous_id: str
    person_id: str  # '' for bots and shared devices
    kind: str  # desktop | mobile | tablet | app | bot
    ua: str
    ip: str
    is_bot: bool = False
    shared_by: list[str] = field(default_factory=list)
    linked_by: set[str] = field(default_factory=set)  # login | identify_email | identify_phone
    n_events: int = 0
    ctx: str = ""  # the JSON members of `context` that never change for this device

    def __post_init__(self) -> None:
        ctx = f'"userAgent":{json.dumps(self.ua)},"ip":"{self.ip}"'
        if self.kind in ("desktop", "mobile", "tablet"):
            ctx += f',"device":{{"type":"{self.kind}"}}'
        elif self.kind == "app":
            ctx += ',"device":{"type":"%s"}' % ("ios" if "iOS" in self.ua else "android")
        self.ctx = ctx


def _anon_id(rng: np.random.Generator) -> str:
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, size=16))
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _ip(rng: np.random.Generator, bot: bool = False) -> str:
    a = int(rng.choice([66, 157, 40])) if bot else int(rng.integers(11, 223))
    return f"{a}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"


class EventBuilder:
    """Collects events as pre-rendered JSON bodies (everything but messageId and timestamp).

    Events are written as strings built here rather than dicts passed through
    json.dumps: every value is either a fixed ASCII token or escaped once (user
    agents per device, traits per identify call), and rendering dominated the run time.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.fr = render.FastRandom(rng)
        self.ts: list[float] = []  # epoch seconds, UTC
        self.app: list[bool] = []
        self.body: list[str] = []

    def add(self, ts: float, dev: Device, etype: str, *, event: str | None = None,
            user_id: str | None = None, properties: str = "{}",
            traits: dict[str, object] | None = None, url: str = "/", referrer: str = "",
            campaign: str | None = None) -> None:
        parts = [f'"type":"{etype}"']
        if event is not None:
            parts.append(f'"event":"{event}"')
        parts.append(f'"anonymousId":"{dev.anonymous_id}"')
        if user_id is not None:
            parts.append(f'"userId":"{user_id}"')
        elif self.fr.random() < 0.5:
            parts.append('"userId":null')  # some SDKs send an explicit null, others omit it
        camp = f',"campaign":{campaign}' if campaign else ""
        parts.append(f'"context":{{{dev.ctx},"page":{{"url":"{SHOP}{url}",'
                     f'"referrer":"{referrer}"}}{camp}}}')
        parts.append(f'"properties":{properties}')
        if traits:
            parts.append(f'"traits":{json.dumps(traits, ensure_ascii=False)}')
        dev.n_events += 1
        self.ts.append(ts)
        self.app.append(dev.kind == "app")
        self.body.append(",".join(parts))


def _session(b: EventBuilder, rng: np.random.Generator, dev: Device, start: datetime,
             n_events: int, *, user_id: str | None, identify_traits: dict[str, object] | None,
             order: Order | None) -> None:
    fr = b.fr
    ts = start.timestamp()
    campaign = None
    ref = ("", "https://www.google.com/", "https://www.facebook.com/", "https://t.co/")[
        fr.integers(0, 4)]
    if fr.random() < 0.2:
        name = ("black_friday", "winter_sale", "new_in")[fr.integers(0, 3)]
        campaign = f'{{"source":"newsletter","medium":"email","name":"{name}"}}'
    b.add(ts, dev, "page", url="/", referrer=ref, campaign=campaign,
          properties='{"path":"/","title":"Home"}')
    if identify_traits is not None or user_id is not None:
        ts += fr.integers(5, 90)
        b.add(ts, dev, "identify", user_id=user_id, traits=identify_traits or {})
    cat = CATEGORIES[fr.integers(0, len(CATEGORIES))]
    for _ in range(max(0, n_events - 1)):
        ts += fr.integers(8, 240) + fr.random()
        sku = f"sku-{fr.integers(1000, 9999)}"
        draw = fr.random()
        if draw < 0.45:
            b.add(ts, dev, "page", user_id=user_id, url=f"/c/{cat}",
                  properties=f'{{"path":"/c/{cat}","title":"{cat.title()}"}}')
        elif draw < 0.85:
            b.add(ts, dev, "track", event="Product Viewed", user_id=user_id, url=f"/p/{sku}",
                  properties=f'{{"product_id":"{sku}","category":"{cat}",'
                             f'"price":{fr.uniform(5, 250):.2f}}}')
        else:
            b.add(ts, dev, "track", event="Product Added", user_id=user_id, url=f"/p/{sku}",
                  properties=f'{{"product_id":"{sku}","quantity":1}}')
    if order is not None:
        placed = order.order_ts.timestamp()
        ts = max(ts, placed - 60 * fr.integers(2, 9))
        b.add(ts, dev, "track", event="Checkout Started", user_id=user_id, url="/checkout",
              properties=f'{{"value":{order.total:.2f},"currency":"{order.currency}"}}')
        b.add(placed, dev, "track", event="Order Completed", user_id=user_id,
              url="/checkout/thank-you",
              properties=f'{{"order_id":"{order.order_id}","revenue":{order.total:.2f},'
                         f'"total":{order.total:.2f},"discount":{order.discount:.2f},'
                         f'"currency":"{order.currency}"}}')


def _traits(rng: np.random.Generator, rec: CrmRecord | None, email: str, phone: str,
            country: str) -> dict[str, object]:
    t: dict[str, object] = {}
    if email:
        t["email"] = email if rng.random() < 0.8 else render.case_space_variant(rng, email)
    if phone and rng.random() < 0.3:
        t["phone"] = render.phone_variant(rng, phone, country)
    if rec is not None and rng.random() < 0.5:
        t["firstName"], t["lastName"] = rec.first_name, rec.last_name
    return t


def make_events(cfg: ZoneConfig, rng: np.random.Generator, persons: list[Person],
                records: list[CrmRecord], orders: list[Order]
                ) -> tuple[EventBuilder, list[Device]]:
    b = EventBuilder(rng)
    devices: list[Device] = []
    recs_by_person: dict[str, list[CrmRecord]] = {}
    for r in records:
        recs_by_person.setdefault(r.person_id, []).append(r)
    orders_by_person: dict[str, list[Order]] = {}
    for o in orders:
        if not o.future and o.channel != "store":
            orders_by_person.setdefault(o.person_id, []).append(o)
    as_of_dt = datetime(cfg.as_of.year, cfg.as_of.month, cfg.as_of.day, tzinfo=UTC)
    window_lo = as_of_dt - timedelta(days=cfg.event_days)
    for p in persons:
        mix = np.array(p.device_mix)
        n_dev = 1 + int(rng.random() < 0.45) + int(rng.random() < 0.15)
        kinds = rng.choice(4, size=n_dev, p=mix / mix.sum())
        devs = []
        for k in kinds.tolist():
            kind = DEVICE_TYPES[k]
            d = Device(_anon_id(rng), p.person_id, kind,
                       UAS[kind][int(rng.integers(len(UAS[kind])))], _ip(rng))
            devs.append(d)
        recs = recs_by_person.get(p.person_id, [])
        lo = max(datetime(p.first_seen.year, p.first_seen.month, p.first_seen.day, tzinfo=UTC),
                 window_lo)
        hi = min(datetime(p.last_active.year, p.last_active.month, p.last_active.day,
                          tzinfo=UTC) + timedelta(days=1), as_of_dt)
        span = (hi - lo).total_seconds()
        n_sess = int(rng.poisson(p.sessions_per_day * span / 86400)) if span > 0 else 0
        starts = [lo + timedelta(seconds=float(s)) for s in rng.uniform(0, max(span, 0), n_sess)]
        for start in starts:
            if start.weekday() < 5 and rng.random() < p.weekend_share * 0.6:
                start += timedelta(days=5 - start.weekday())
                if start >= as_of_dt:
                    start -= timedelta(days=7)
            dev = devs[0] if rng.random() < 0.7 else devs[int(rng.integers(len(devs)))]
            n_ev = 1 + int(rng.poisson(max(0.5, p.events_per_session - 1)))
            user_id, traits = None, None
            if recs and rng.random() < cfg.login_prob:
                rec = recs[0] if len(recs) == 1 or rng.random() < 0.7 else recs[
                    int(rng.integers(1, len(recs)))]
                user_id = rec.contact_id
                traits = _traits(rng, rec, rec.email_true, rec.phone_e164, p.country)
                dev.linked_by.add("login")
            elif rng.random() < 0.04:
                traits = {"email": p.email}  # newsletter sign-up form
                dev.linked_by.add("identify_email")
            _session(b, rng, dev, start, n_ev, user_id=user_id, identify_traits=traits,
                     order=None)
        for o in orders_by_person.get(p.person_id, []):
            if o.order_ts < window_lo:
                continue
            cands = [d for d in devs if (d.kind == "app") == (o.channel == "app")] or devs
            dev = cands[int(rng.integers(len(cands)))]
            start = o.order_ts - timedelta(minutes=int(rng.integers(5, 40)))
            if o.contact_id:
                rec = next(r for r in recs if r.contact_id == o.contact_id)
                traits = _traits(rng, rec, rec.email_true, rec.phone_e164, p.country)
                _session(b, rng, dev, start, 3, user_id=o.contact_id, identify_traits=traits,
                         order=o)
                dev.linked_by.add("login")
            else:
                traits = {"email": o.email} if rng.random() < 0.4 else None
                if traits:
                    dev.linked_by.add("identify_email")
                _session(b, rng, dev, start, 3, user_id=None, identify_traits=traits, order=o)
        p.devices = [d.anonymous_id for d in devs if d.n_events]
        devices.extend(d for d in devs if d.n_events)
    devices.extend(_shared_devices(cfg, rng, b, persons, recs_by_person, window_lo, as_of_dt))
    devices.extend(_bots(cfg, rng, b, window_lo, as_of_dt))
    return b, devices


def _shared_devices(cfg: ZoneConfig, rng: np.random.Generator, b: EventBuilder,
                    persons: list[Person], recs_by_person: dict[str, list[CrmRecord]],
                    lo: datetime, hi: datetime) -> list[Device]:
    """A family tablet: several household members log in on the same browser."""
    households: dict[str, list[Person]] = {}
    for p in persons:
        if p.household_id and recs_by_person.get(p.person_id):
            households.setdefault(p.household_id, []).append(p)
    out = []
    span = (hi - lo).total_seconds()
    for _hh, members in sorted(households.items()):
        if len(members) < 2 or rng.random() >= cfg.shared_device_prob:
            continue
        kind = "tablet" if rng.random() < 0.6 else "desktop"
        dev = Device(_anon_id(rng), "", kind, UAS[kind][int(rng.integers(len(UAS[kind])))],
                     _ip(rng))
        dev.shared_by = [m.person_id for m in members]
        for m in members:
            rec = recs_by_person[m.person_id][0]
            for _ in range(1 + int(rng.integers(0, 3))):
                start = lo + timedelta(seconds=float(rng.uniform(0, span - 3600)))
                _session(b, rng, dev, start, 1 + int(rng.poisson(3)), user_id=rec.contact_id,
                         identify_traits=_traits(rng, rec, rec.email_true, "", m.country),
                         order=None)
        dev.linked_by.add("login")
        out.append(dev)
    return out


def _bots(cfg: ZoneConfig, rng: np.random.Generator, b: EventBuilder, lo: datetime,
          hi: datetime) -> list[Device]:
    out = []
    span = (hi - lo).total_seconds()
    for _ in range(max(2, int(cfg.persons * cfg.bot_share))):
        dev = Device(_anon_id(rng), "", "bot", BOT_UAS[int(rng.integers(len(BOT_UAS)))],
                     _ip(rng, bot=True), is_bot=True)
        for _s in range(1 + int(rng.integers(0, 4))):
            ts = lo.timestamp() + float(rng.uniform(0, span - 7200))
            fr = b.fr
            for _e in range(fr.integers(10, 60)):
                ts += fr.integers(1, 20) + fr.random()
                cat = CATEGORIES[fr.integers(0, len(CATEGORIES))]
                if fr.random() < 0.7:
                    b.add(ts, dev, "page", url=f"/c/{cat}", properties=f'{{"path":"/c/{cat}"}}')
                else:
                    sku = f"sku-{fr.integers(1000, 9999)}"
                    b.add(ts, dev, "track", event="Product Viewed", url=f"/p/{sku}",
                          properties=f'{{"product_id":"{sku}","category":"{cat}"}}')
        out.append(dev)
    return out
