"""Build a zone: persons -> CRM records -> orders -> events, then write landing and truth."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from segment_tools.zone2 import render, truth
from segment_tools.zone2.config import ZoneConfig
from segment_tools.zone2.crm import CrmRecord, make_crm
from segment_tools.zone2.events import EventBuilder, make_events
from segment_tools.zone2.orders import Order, OrderIds, make_orders
from segment_tools.zone2.people import make_persons

CRM_HEADER = ("contact_id", "updated_at", "first_name", "last_name", "email", "phone",
              "birth_date", "gender", "country", "city", "postal_code", "street",
              "marketing_consent", "created_at", "source_system")
TX_HEADER = ("order_id", "order_ts", "channel", "status", "email", "contact_id", "currency",
             "total_amount", "discount_amount", "items_count", "updated_at", "payment_method")


@dataclass(frozen=True)
class ZoneSummary:
    out: Path
    persons: int
    crm_records: int
    orders: int
    future_orders: int
    events: int
    devices: int
    files: int
    seconds: float


def generate(cfg: ZoneConfig, out: Path) -> ZoneSummary:
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    # the future has its own stream so the landing zone does not depend on holdout_days
    frng = np.random.default_rng([cfg.seed, 30])
    persons, book = make_persons(cfg, rng)
    records = make_crm(cfg, rng, persons, book)
    orders = make_orders(cfg, rng, persons, records, OrderIds(rng), frng,
                         _future_ids(frng))
    builder, devices = make_events(cfg, rng, persons, records, orders)
    landing = out / "landing"
    files = _write_crm(cfg, rng, landing / "crm", records)
    files += _write_orders(rng, landing / "transactions", [o for o in orders if not o.future])
    n_events, ev_files = _write_events(cfg, rng, landing / "analytics", builder)
    files += ev_files
    future = [o for o in orders if o.future]
    if cfg.holdout_days:
        _write_orders(rng, out / "future" / "transactions", future, single="orders_future.csv")
    truth.write_truth(cfg, out / "truth", persons, records, orders, devices)
    return ZoneSummary(out=out, persons=len(persons), crm_records=len(records),
                       orders=len(orders) - len(future), future_orders=len(future),
                       events=n_events, devices=len(devices), files=files,
                       seconds=round(time.perf_counter() - t0, 2))


def _future_ids(frng: np.random.Generator) -> OrderIds:
    ids = OrderIds(frng)
    ids.seq += 9_000_000  # far above the history's sequence: ids never collide
    return ids


def _crm_row(rng: np.random.Generator, r: CrmRecord, upd: datetime, changes: dict[str, str]
             ) -> list[object]:
    consent = changes.get("consent", r.consent)
    return [r.contact_id, render.iso_ts(rng, upd, r.country or "US"), r.first_name, r.last_name,
            r.email, r.phone, r.birth_date, r.gender, r.country,
            changes.get("city", r.city), changes.get("postal_code", r.postal_code), r.street,
            render.consent_text(rng, consent), render.iso_ts(rng, r.created_at, r.country or "US"),
            "shopify" if r.is_primary else "pos"]


def _write_crm(cfg: ZoneConfig, rng: np.random.Generator, d: Path,
               records: list[CrmRecord]) -> int:
    """An initial full export (records created in the first year) and monthly deltas."""
    as_of = datetime(cfg.as_of.year, cfg.as_of.month, cfg.as_of.day, tzinfo=UTC)
    cut = as_of - timedelta(days=365)
    full = f"crm_export_full_{cut:%Y%m%d}.csv"
    buckets: dict[str, list[tuple[datetime, list[object]]]] = defaultdict(list)
    for r in records:
        # carry the latest version of each field forward through the updates
        state: dict[str, str] = {}
        name = full if r.updated_at < cut else f"crm_export_incr_{r.updated_at:%Y%m}.csv.gz"
        buckets[name].append((r.updated_at, _crm_row(rng, r, r.updated_at, state)))
        for ts, change in r.updates:
            state = {**state, **change}
            # every update is a delta row, also one older than the full export's cut
            name = f"crm_export_incr_{max(ts, cut):%Y%m}.csv.gz"
            buckets[name].append((ts, _crm_row(rng, r, ts, state)))
    for i, (name, rows) in enumerate(sorted(buckets.items())):
        rows.sort(key=lambda x: (x[0], str(x[1][0])))
        render.write_csv(d / name, CRM_HEADER, [row for _, row in rows], crlf=i % 2 == 0)
    return len(buckets)


def _fmt_amount(v: float) -> str:
    return f"{v:.2f}"


def _order_row(rng: np.random.Generator, o: Order, status: str, upd: datetime) -> list[object]:
    return [o.order_id, render.iso_ts(rng, o.order_ts), o.channel, status, o.email,
            o.contact_id, o.currency, _fmt_amount(o.total),
            _fmt_amount(o.discount) if o.discount or rng.random() < 0.5 else "",
            o.items if rng.random() < 0.95 else "", render.iso_ts(rng, upd),
            ["card", "paypal", "klarna", "apple_pay"][int(rng.integers(4))]]


def _write_orders(rng: np.random.Generator, d: Path, orders: list[Order],
                  single: str | None = None) -> int:
    """Monthly files; a refund arrives as an update in the following month's file or later."""
    buckets: dict[str, list[tuple[datetime, list[object]]]] = defaultdict(list)

    def name_for(ts: datetime, month_index: int) -> str:
        if single:
            return single
        stem = f"orders_{ts.year}-{ts.month:02d}"
        return f"{stem}.csv.gz" if month_index % 3 == 0 else f"{stem}.csv"

    for o in orders:
        buckets[name_for(o.order_ts, o.order_ts.month)].append(
            (o.order_ts, _order_row(rng, o, o.status, o.updated_at)))
        if o.update_ts is not None:
            when = o.update_ts
            if f"{when:%Y-%m}" == f"{o.order_ts:%Y-%m}":
                # keep each order once per file: the update goes into next month's delivery
                first_next = (when.replace(day=1) + timedelta(days=32)).replace(day=1)
                when = max(when, first_next)
            buckets[name_for(when, when.month)].append(
                (when, _order_row(rng, o, o.final_status, o.update_ts)))
    for name, rows in sorted(buckets.items()):
        rows.sort(key=lambda x: (x[0], str(x[1][0])))
        render.write_csv(d / name, TX_HEADER, [row for _, row in rows],
                         crlf=name.endswith("-02.csv") or name.endswith("-08.csv")
                         or name.endswith("-11.csv"))
    return len(buckets)


def _write_events(cfg: ZoneConfig, rng: np.random.Generator, d: Path,
                  builder: EventBuilder) -> tuple[int, int]:
    """Weekly files per stream (web gzip, app plain); a few events delivered again later."""
    ts = np.asarray(builder.ts, dtype=np.float64)
    n = len(ts)
    order = np.argsort(ts, kind="stable")
    hi = rng.integers(0, 2**63, size=n, dtype=np.int64)
    lo = rng.integers(0, 2**63, size=n, dtype=np.int64)
    app = np.asarray(builder.app, dtype=bool)
    # one timestamp style per stream, as one SDK writes one style
    stamps = np.datetime_as_string((ts * 1000).astype(np.int64).astype("datetime64[ms]"),
                                   unit="ms")
    days = np.floor(ts / 86400).astype(np.int64)
    monday = (days - (days + 3) % 7).astype("datetime64[D]")  # 1970-01-01 was a Thursday
    week = np.datetime_as_string(monday, unit="D")
    redeliver = (rng.random(n) < cfg.redelivery_share).tolist()
    # plain lists: indexing numpy arrays one scalar at a time is the slow part otherwise
    hi_l, lo_l, app_l = hi.tolist(), lo.tolist(), app.tolist()
    stamps_l, week_l = stamps.tolist(), week.tolist()
    files: dict[str, list[str]] = defaultdict(list)
    late: list[tuple[str, str]] = []
    body = builder.body
    for i in order.tolist():
        if app_l[i]:
            name = f"app_events_{week_l[i]}.jsonl"
            head = f'{{"messageId":"app-{hi_l[i]:x}","timestamp":"{stamps_l[i]}+00:00",'
        else:
            name = f"web_{week_l[i]}.jsonl.gz"
            head = f'{{"messageId":"{hi_l[i]:016x}{lo_l[i]:016x}","timestamp":"{stamps_l[i]}Z",'
        line = head + body[i] + "}"
        files[name].append(line)
        if redeliver[i]:
            late.append((name, line))
    names = sorted(files)
    # redelivery: the SDK retries and the same messageId shows up again in a later file
    for own, line in late:
        k = names.index(own)
        later = [nm for nm in names[k + 1:] if nm[:3] == own[:3]]
        files[later[0] if later else own].append(line)
    total = 0
    for name in names:
        lines = files[name]
        render.write_bytes(d / name, ("\n".join(lines) + "\n").encode("utf-8"))
        total += len(lines)
    return total, len(names)
