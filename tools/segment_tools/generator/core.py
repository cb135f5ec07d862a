"""Orchestration: chunks of persons -> landing files + truth files."""

from __future__ import annotations

import csv
import ctypes
import io
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from . import vocab as V
from .activity import (
    BOT_KEY_BASE,
    Orders,
    add_shared_devices,
    make_events,
    make_orders,
    make_sessions,
    order_updates,
    plan_counts,
)
from .population import KEYS_PER_PERSON, Population, make_population
from .render import (
    CRM_HEADER,
    CURRENCIES,
    ORDERS_HEADER,
    EventRenderer,
    anonymous_ids,
    contact_ids,
    crm_lines,
    emails,
    order_ids,
    order_lines,
    person_ids,
    warm_event_vocab,
)
from .text import gzip_bytes, line_offsets, lines_buffer, take, timestamps, warm_caches
from .timeline import Timeline

CHUNK_PERSONS = 50_000  # part of the output format: changing it changes the bytes
MAX_WORKERS = 2  # processes; the output does not depend on it
WRITE_BLOCK = 512 * 1024  # bytes per write() call
DEFAULT_END = date(2026, 11, 22)
DEFAULT_DAYS = 180
SOURCES = ("crm", "analytics", "transactions", "erasure")
BAD_KINDS = {
    "crm": ("missing_required", "unparseable_timestamp"),
    "transactions": ("missing_required", "unparseable_timestamp", "negative_amount",
                     "unknown_currency"),
    "analytics": ("invalid_json", "missing_required", "unparseable_timestamp", "invalid_type"),
}
BAD_FILE_KINDS = ("not_gzip", "wrong_header", "not_utf8")
BAD_TIMESTAMPS = ("not-a-date", "2026-13-45 25:61:00", "31/12/2026 10:00", "yesterday")
TRUTH_FILES = ("persons.csv", "crm_contacts.csv", "anonymous_ids.csv", "orders.csv",
               "bad_records.csv", "erasure_requests.csv")


@dataclass
class GenerationSummary:
    out: Path
    truth_dir: Path
    files: list[str] = field(default_factory=list)  # relative to out, in write order
    persons: int = 0
    customers: int = 0
    crm_rows: int = 0
    events: int = 0  # analytics lines written (redeliveries and bad lines included)
    order_rows: int = 0
    bad_rows: int = 0
    bad_files: int = 0
    erasure_requests: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["out"], d["truth_dir"] = str(self.out), str(self.truth_dir)
        d["events_per_second"] = round(self.events_per_second)
        return d


@dataclass(frozen=True)
class Params:
    customers: int
    seed: int
    start: date
    days: int
    window_days: int
    bad_rows: bool
    bad_row_rate: float
    visitor_ratio: float
    gzip_level: int
    redelivery_rate: float = 0.005
    late_rate: float = 0.003
    future_rate: float = 0.0002

    @property
    def visitors(self) -> int:
        return round(self.customers * self.visitor_ratio)

    @property
    def total_persons(self) -> int:
        return self.customers + self.visitors


# --- file writing -------------------------------------------------------------


def _fallocate() -> object:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError, TypeError):  # not Linux / glibc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fn


_FALLOCATE = _fallocate()


def _reserve(fd: int, size: int) -> None:
    """Allocate a new file's blocks in one go (FALLOC_FL_KEEP_SIZE: the size stays 0
    until written). A hint only: writing into reserved blocks costs the kernel about a
    quarter less than allocating them write by write; unsupported file systems skip it."""
    if _FALLOCATE is not None:
        _FALLOCATE(fd, 1, 0, size)


class _Writer:
    """Writes landing files, injects bad rows, records truth about them.

    Thread-safe: files are rendered and written in parallel, so each file draws
    its bad rows from its own random stream (keyed by its name) and shared
    lists are sorted at the end; output does not depend on thread timing.
    """

    def __init__(self, out: Path, truth: Path, p: Params, rng_key: list[int],
                 summary: GenerationSummary) -> None:
        self.out, self.truth, self.p, self.rng_key, self.s = out, truth, p, rng_key, summary
        self.bad: list[tuple[str, str, int | None, str]] = []
        self.samples: dict[str, tuple[str, list[str]]] = {}
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:  # sent back from worker processes
        return {k: v for k, v in vars(self).items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self.lock = threading.Lock()

    def write(self, source: str, name: str, header: str | None, lines: pa.Array,
              gz: bool, first: bool = False) -> None:
        rel = f"{source}/{name}" + (".gz" if gz else "")
        if first and len(lines):
            # The source's first file provides the sample rows for the bad file.
            self.samples[source] = (header or "", lines.slice(0, 20).to_pylist())
        parts: list = [header.encode() + b"\n"] if header is not None else []
        if self.p.bad_rows and source in BAD_KINDS and len(lines):
            parts += self._inject(source, rel, header, lines, first)
        else:
            parts.append(lines_buffer(lines))
        self._put(rel, [gzip_bytes(parts, self.p.gzip_level)] if gz else parts)

    def _put(self, rel: str, parts: list) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        views = [memoryview(part) for part in parts]
        size = sum(len(v) for v in views)
        with path.open("wb", buffering=0) as f:
            if size >= WRITE_BLOCK:
                _reserve(f.fileno(), size)
            for view in views:
                # Slices of WRITE_BLOCK bytes: the kernel copies multi-megabyte write()
                # calls into the page cache at half the speed of sub-megabyte ones.
                for at in range(0, len(view), WRITE_BLOCK):
                    f.write(view[at:at + WRITE_BLOCK])
        with self.lock:
            self.s.files.append(rel)
            self.s.bytes_written += size

    def finish(self) -> None:
        self.s.files.sort()
        self.bad.sort(key=lambda r: (r[1], r[2] or 0))

    def merge(self, other: _Writer) -> None:
        """Fold a worker's writer (files written in another process) into this one."""
        self.bad += other.bad
        for source, sample in other.samples.items():
            self.samples.setdefault(source, sample)
        self.s.files += other.s.files
        self.s.bytes_written += other.s.bytes_written
        self.s.bad_rows += other.s.bad_rows

    def _inject(self, source: str, rel: str, header: str | None, lines: pa.Array,
                first: bool) -> list:
        """The file body as buffer parts, with bad lines spliced in (no full copy)."""
        rng = np.random.default_rng([*self.rng_key, zlib.crc32(rel.encode())])
        n = len(lines)
        body = lines_buffer(lines)
        kinds = list(BAD_KINDS[source])
        k = int(rng.binomial(n, self.p.bad_row_rate))
        chosen = [kinds[i] for i in rng.integers(0, len(kinds), k)]
        if first:
            # Every kind shows up at least once per run, in the source's first file.
            chosen = kinds + chosen
        if not chosen:
            return [body]
        k = len(chosen)
        src = rng.integers(0, n, k)
        pos = np.sort(rng.integers(0, n + 1, k))
        bad = [self._corrupt(source, header, lines[int(j)].as_py(), kind, rng)
               for j, kind in zip(src, chosen, strict=True)]
        head = 1 if header is not None else 0
        with self.lock:
            for i, kind in enumerate(chosen):
                self.bad.append((source, rel, head + int(pos[i]) + i + 1, kind))
            self.s.bad_rows += k
        # byte offset of each line start, relative to the body buffer
        offsets = line_offsets(lines)
        offsets -= offsets[0]
        parts: list = []
        prev = 0
        for i in range(k):
            cut = int(offsets[pos[i]])
            if cut > prev:
                parts.append(body[prev:cut])
            parts.append(bad[i].encode())
            prev = cut
        if prev < body.size:
            parts.append(body[prev:])
        return parts

    @staticmethod
    def _corrupt(source: str, header: str | None, line: str, kind: str,
                 rng: np.random.Generator) -> str:
        r = int(rng.integers(0, 1 << 30))
        if source == "analytics":
            if kind == "invalid_json":
                return line[: len(line) // 2] + "\n"
            obj = json.loads(line)
            if kind == "missing_required":
                obj.pop("messageId" if r % 2 else "timestamp")
            elif kind == "unparseable_timestamp":
                obj["timestamp"] = BAD_TIMESTAMPS[r % len(BAD_TIMESTAMPS)]
            else:
                obj["type"] = "alias"
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"
        cols = (header or "").split(",")
        row = next(csv.reader([line.rstrip("\n")]))
        if source == "crm":
            if kind == "missing_required":
                row[cols.index("contact_id" if r % 2 else "updated_at")] = ""
            else:
                row[cols.index("updated_at")] = BAD_TIMESTAMPS[r % len(BAD_TIMESTAMPS)]
        elif kind == "missing_required":
            req = ("order_id", "order_ts", "status", "currency", "total_amount")
            row[cols.index(req[r % len(req)])] = ""
        elif kind == "unparseable_timestamp":
            row[cols.index("order_ts")] = BAD_TIMESTAMPS[r % len(BAD_TIMESTAMPS)]
        elif kind == "negative_amount":
            i = cols.index("total_amount")
            row[i] = "-" + (row[i] if row[i] not in ("", "0.00") else "1.00")
        else:
            row[cols.index("currency")] = "XXX"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        return buf.getvalue()

    def write_bad_file(self, day: date) -> None:
        """One delivery per run that cannot be read as its source at all."""
        kind = BAD_FILE_KINDS[self.p.seed % len(BAD_FILE_KINDS)]
        source = {"not_gzip": "transactions", "wrong_header": "crm",
                  "not_utf8": "analytics"}[kind]
        _header, lines = self.samples.get(source, ("", []))
        if kind == "not_gzip":
            rel = f"transactions/orders_{day}_901.csv.gz"
            data = (ORDERS_HEADER + "\n" + "".join(lines)).encode()
        elif kind == "wrong_header":
            rel = f"crm/contacts_{day}_901.csv"
            data = ("id;mail;telephone;name;updated\n"
                    + "".join(x.replace(",", ";") for x in lines)).encode()
        else:
            rel = f"analytics/events_{day}_901.jsonl"
            body = "".join(x[:-2] + ',"note":"café crème"}\n' for x in lines) or '{"a":"é"}\n'
            data = body.encode("latin-1", errors="replace")
        self._put(rel, [data])
        self.bad.append((source, rel, None, f"bad_file_{kind}"))
        self.s.bad_files += 1


# --- truth ---------------------------------------------------------------------


class _Truth:
    def __init__(self, truth: Path, append: bool) -> None:
        self.dir = truth
        self.writers: dict[str, pacsv.CSVWriter] = {}
        self.append = append

    def add(self, name: str, table: pa.Table) -> None:
        if name not in self.writers:
            path = self.dir / name
            if self.append and path.exists():
                # Delta runs append: header already there.
                sink = pa.OSFile(str(path), "ab")
                opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
            else:
                sink = pa.OSFile(str(path), "wb")
                opts = pacsv.WriteOptions(include_header=True, quoting_style="needed")
            self.writers[name] = pacsv.CSVWriter(sink, table.schema, write_options=opts)
        self.writers[name].write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _persona_of(seed: int, chunk: int, pids: np.ndarray, customers: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 5, chunk])
    w = np.array(V.CUSTOMER_PERSONA_WEIGHTS)
    persona = rng.choice(len(w), len(pids), p=w / w.sum())
    return np.where(pids < customers, persona, V.VISITOR).astype(np.int8)


def _consent_str(code: np.ndarray) -> pa.Array:
    return take(["", "true", "false"], code)


def _truth_chunk(truth: _Truth, pop: Population, orders: Orders, all_orders: Orders,
                 sessions, shared: np.ndarray, seed: int) -> None:
    active = np.zeros(pop.n, bool)
    active[pop.persona != V.VISITOR] = True
    active[sessions.person[sessions.person >= 0]] = True
    idx = np.flatnonzero(active)
    hh = pop.household_of[idx]
    truth.add("persons.csv", pa.table({
        "person_id": person_ids(pop.pid[idx]),
        "persona": take(V.PERSONAS, pop.persona[idx]),
        "is_customer": pa.array(pop.persona[idx] != V.VISITOR),
        "in_crm": pa.array(pop.in_crm[idx]),
        "country": take([c[0] for c in V.COUNTRIES], pop.country[idx]),
        "shares_phone_with": _optional_ids(np.where(hh >= 0, pop.pid[np.maximum(hh, 0)], -1)),
    }))
    # Contacts: the latest record per contact id decides its final consent.
    last = _last_per_key(pop.c_key, pop.c_updated)
    truth.add("crm_contacts.csv", pa.table({
        "contact_id": contact_ids(pop.c_key[last]),
        "person_id": person_ids(pop.pid[pop.c_person[last]]),
        "is_duplicate_record": pa.array(pop.c_k[last] > 0),
        "marketing_consent": _consent_str(pop.c_consent[last]),
        "email_kind": take(["ok", "ok", "ok", "missing", "placeholder"],
                           pop.c_email_variant[last]),
    }))
    # Devices actually seen in events, and bots.
    keys, first_i = np.unique(sessions.device_key, return_index=True)
    linked = np.zeros(len(keys), bool)
    li = np.searchsorted(keys, sessions.device_key)
    np.logical_or.at(linked, li, (sessions.user_contact >= 0) | sessions.identify)
    is_bot = keys >= BOT_KEY_BASE
    owner = np.where(is_bot, -1, keys // KEYS_PER_PERSON)
    truth.add("anonymous_ids.csv", pa.table({
        "anonymous_id": anonymous_ids(keys, seed),
        "person_id": _optional_ids(owner),
        "is_bot": pa.array(is_bot),
        "is_shared": pa.array(np.isin(keys, shared)),
        "is_linkable": pa.array(linked),
        "device_type": take(V.DEVICE_TYPES, sessions.dev_type[first_i]),
    }))
    # Orders: the latest row per order id (refunds and settlements are later rows).
    o = all_orders
    last = _last_per_key(o.key, o.updated)
    f = o.take(last)
    truth.add("orders.csv", pa.table({
        "order_id": order_ids(f.key),
        "person_id": person_ids(pop.pid[f.person]),
        "contact_id": _optional(contact_ids(np.maximum(f.contact_key, 0)), f.contact_key >= 0),
        "is_guest": pa.array(f.contact_key < 0),
        "order_ts": timestamps(f.ts, 0),
        "final_status": take(V.ORDER_STATUSES, f.status),
        "currency": take(CURRENCIES, f.currency),
        "total_amount": pa.array(f.total_cents / 100.0),
        "discount_amount": pa.array(f.discount_cents / 100.0),
        "items_count": pa.array(f.items),
        "channel": take(V.CHANNELS, f.channel),
    }))


def _last_per_key(keys: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row index of the latest version of each key (latest timestamp wins)."""
    order = np.lexsort((ts, keys))
    if len(order) == 0:
        return order
    return order[np.r_[keys[order][1:] != keys[order][:-1], True]]


def _optional(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), values, pa.scalar(None, pa.string()))


def _optional_ids(pid_or_neg: np.ndarray) -> pa.Array:
    return _optional(person_ids(np.maximum(pid_or_neg, 0)), pid_or_neg >= 0)


# --- one chunk of history ----------------------------------------------------------


def _gz(source: str, w: int) -> bool:
    # A fixed mix of gzip and plain deliveries; analytics mostly plain (it is the bulk,
    # and compressing it is the slowest part of generation).
    return {"crm": w % 2 == 0, "transactions": w % 3 != 2, "analytics": w % 13 == 1}[source]


def _window_slices(w: np.ndarray, n_windows: int) -> list[tuple[int, int]]:
    """w sorted ascending -> [start, end) per window."""
    bounds = np.searchsorted(w, np.arange(n_windows + 1))
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(n_windows)]


class _TruthRows:
    """Collects truth tables in a worker; the parent appends them in chunk order."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, pa.Table]] = []

    def add(self, name: str, table: pa.Table) -> None:
        self.tables.append((name, table))


@dataclass
class _ChunkResult:
    writer: _Writer
    truth: list[tuple[str, pa.Table]]
    windows: int
    crm_rows: int = 0
    order_rows: int = 0
    events: int = 0
    persons: int = 0
    customers: int = 0
    erasure_pool: list[tuple] = field(default_factory=list)


def _chunk_run(p: Params, tl: Timeline, chunk: int, pids: np.ndarray, personas: np.ndarray,
               out: Path, rng_key: list[int], windows: list[int] | None = None,
               with_truth: bool = True, pop: Population | None = None, stream: int = 20,
               order_key_base: int = 0, id_space: int = 1,
               extra_crm_rows: np.ndarray | None = None,
               file_no: int | None = None) -> tuple[_ChunkResult, Population]:
    """One chunk of persons: its landing files for ``windows`` (default: all), and truth.

    Every file is a pure function of (params, chunk, window), so a chunk can be
    split over processes by windows and the bytes do not depend on the split.
    """
    seed = p.seed
    if pop is None:
        pop = make_population(seed, chunk, pids, personas, tl)
    rng = np.random.default_rng([seed, stream, chunk])
    if tl.is_delta and stream != 20:
        n_orders, n_browse = plan_counts(rng, pop, tl, day_fraction=1.0 / p.days)
    else:
        n_orders, n_browse = plan_counts(rng, pop, tl)
    orders = make_orders(rng, pop, tl, n_orders, key_base=order_key_base)
    upd = order_updates(rng, orders, tl)
    all_orders = orders.concat(upd)
    n_bots = max(1, len(pids) // 400) if not tl.is_delta else max(1, len(pids) // 4000)
    s, start = make_sessions(rng, pop, tl, orders, n_browse, n_bots,
                             bot_base=chunk * CHUNK_PERSONS // 100)
    s, start, shared = add_shared_devices(rng, pop, s, start, tl)
    e = make_events(rng, pop, s, start, tl, p.future_rate)

    # Delivery plan for events: most in their window, some late, some delivered twice.
    m = len(e.ts)
    ew = tl.window_of(e.deliver_ts)
    late = rng.random(m) < p.late_rate
    ew = np.where(late, np.minimum(ew + rng.integers(1, 4, m), tl.n_windows - 1), ew)
    dup = np.flatnonzero(rng.random(m) < p.redelivery_rate)
    entries = np.concatenate([np.arange(m), dup])
    ent_w = np.concatenate([ew, np.minimum(ew[dup] + rng.integers(0, 3, len(dup)),
                                           tl.n_windows - 1)])
    ent_late = np.concatenate([late, np.ones(len(dup), bool)])
    # Late and redelivered lines come after the on-time ones within a file. One int64
    # key (window, late, time) sorted stably: the order of lexsort((time, late, window)).
    rel = np.clip(e.deliver_ts[entries] - tl.t0 + (1 << 44), 0, (1 << 45) - 1)
    o_ = np.argsort((ent_w.astype(np.int64) << 46) | (ent_late.astype(np.int64) << 45) | rel,
                    kind="stable")
    entries, ent_w = entries[o_], ent_w[o_]

    crm_rows = np.flatnonzero(pop.in_crm[pop.c_person]) if extra_crm_rows is None \
        else extra_crm_rows
    crm_w = tl.window_of(pop.c_updated[crm_rows])
    o_ = np.lexsort((pop.c_updated[crm_rows], crm_w))
    crm_rows, crm_w = crm_rows[o_], crm_w[o_]
    ord_w = tl.window_of(all_orders.updated)
    o_ = np.lexsort((all_orders.updated, ord_w))
    all_sorted = all_orders.take(o_)
    ord_w = ord_w[o_]

    if windows is None:
        windows = list(range(tl.n_windows))
    summary = GenerationSummary(out=out, truth_dir=out)
    writer = _Writer(out, out, p, rng_key, summary)
    res = _ChunkResult(writer=writer, truth=[], windows=len(windows))
    id_base = (id_space << 56) | (chunk << 36)
    ev_sl = _window_slices(ent_w, tl.n_windows)
    crm_sl = _window_slices(crm_w, tl.n_windows)
    ord_sl = _window_slices(ord_w, tl.n_windows)
    no = f"{(chunk if file_no is None else file_no) + 1:03d}"
    notes_w = 2 if chunk == 0 and tl.n_windows > 2 else -1  # one file has an extra column

    def first_nonempty(sl: list[tuple[int, int]]) -> int:
        return next((i for i, (a, b) in enumerate(sl) if b > a), -1) if chunk == 0 else -1

    first = {"crm": first_nonempty(crm_sl), "transactions": first_nonempty(ord_sl),
             "analytics": first_nonempty(ev_sl)}

    # Each source is rendered once for all of this task's windows, then cut per file.
    def task_rows(sl: list[tuple[int, int]], skip: int = -1) -> tuple[np.ndarray, dict]:
        pos, at = [], {}
        n = 0
        for w in windows:
            a, b = sl[w]
            if b > a and w != skip:
                pos.append(np.arange(a, b))
                at[w] = (n, n + b - a)
                n += b - a
        return (np.concatenate(pos) if pos else np.zeros(0, np.int64)), at

    sel, crm_at = task_rows(crm_sl, skip=notes_w)
    crm_all = crm_lines(pop, crm_rows[sel], extra_notes=False) if len(sel) else None
    sel, ord_at = task_rows(ord_sl)
    ord_all = order_lines(pop, all_sorted.take(sel)) if len(sel) else None
    sel, ev_at = task_rows(ev_sl)
    events = EventRenderer(pop, s, e, orders, entries[sel], id_base, seed) if len(sel) else None
    del sel

    for w in windows:
        day = tl.delivery_date(w)
        a, b = crm_sl[w]
        if b > a:
            if w == notes_w:
                lines = crm_lines(pop, crm_rows[a:b], extra_notes=True)
            else:
                lo, hi = crm_at[w]
                lines = crm_all.slice(lo, hi - lo)
            header = CRM_HEADER + (",notes" if w == notes_w else "")
            writer.write("crm", f"contacts_{day}_{no}.csv", header, lines, _gz("crm", w),
                         first["crm"] == w)
            res.crm_rows += b - a
        if w in ord_at:
            lo, hi = ord_at[w]
            writer.write("transactions", f"orders_{day}_{no}.csv", ORDERS_HEADER,
                         ord_all.slice(lo, hi - lo), _gz("transactions", w),
                         first["transactions"] == w)
            res.order_rows += hi - lo
        if w in ev_at:
            lo, hi = ev_at[w]
            lines = events.lines(lo, hi)
            writer.write("analytics", f"events_{day}_{no}.jsonl", None, lines,
                         _gz("analytics", w), first["analytics"] == w)
            res.events += hi - lo
            del lines
    del events
    if with_truth:
        rows = _TruthRows()
        _truth_chunk(rows, pop, orders, all_orders, s, shared, seed)
        res.truth = rows.tables
        res.persons = int(((pop.persona != V.VISITOR) | np.isin(
            np.arange(pop.n), s.person)).sum())
        res.customers = int((pop.persona != V.VISITOR).sum())
    return res, pop


def _apply(res: _ChunkResult, writer: _Writer, truth: _Truth, summary: GenerationSummary,
           bar: tqdm) -> None:
    """Fold one chunk's result into the run (in chunk order: truth rows are appended)."""
    writer.merge(res.writer)
    for name, table in res.truth:
        truth.add(name, table)
    summary.crm_rows += res.crm_rows
    summary.order_rows += res.order_rows
    summary.events += res.events
    summary.persons += res.persons
    summary.customers += res.customers
    bar.update(res.windows)


def _chunk(p: Params, tl: Timeline, chunk: int, pids: np.ndarray, personas: np.ndarray,
           writer: _Writer, truth: _Truth, bar: tqdm, summary: GenerationSummary,
           pop: Population | None = None, stream: int = 20, order_key_base: int = 0,
           id_space: int = 1, extra_crm_rows: np.ndarray | None = None,
           file_no: int | None = None) -> Population:
    """A whole chunk in this process (delta days)."""
    res, pop = _chunk_run(p, tl, chunk, pids, personas, writer.out, writer.rng_key, pop=pop,
                          stream=stream, order_key_base=order_key_base, id_space=id_space,
                          extra_crm_rows=extra_crm_rows, file_no=file_no)
    _apply(res, writer, truth, summary, bar)
    return pop


def _history_task(task: tuple[Params, Timeline, Path, int, list[int], bool, int]
                  ) -> _ChunkResult:
    """Worker entry point: one chunk (or some of its windows) of the history."""
    p, tl, out, c, windows, with_truth, erasure_requests = task
    pids = np.arange(c * CHUNK_PERSONS, min((c + 1) * CHUNK_PERSONS, p.total_persons))
    res, pop = _chunk_run(p, tl, c, pids, _persona_of(p.seed, c, pids, p.customers), out,
                          [p.seed, 50], windows=windows, with_truth=with_truth)
    if with_truth and erasure_requests > 0:
        res.erasure_pool = _erasure_candidates(pop, np.random.default_rng([p.seed, 41, c]),
                                               erasure_requests)
    return res


def _history_tasks(p: Params, tl: Timeline, out: Path, n_chunks: int, workers: int,
                   erasure_requests: int) -> list[tuple]:
    # Whole chunks, except that the last n_chunks % workers chunks (when there are only
    # a few chunks) are split over the workers by window, so both cores finish together.
    # A split part regenerates its chunk's people and events, so split only what helps.
    parts = max(1, min(workers, tl.n_windows))
    split = n_chunks % workers if n_chunks < 4 * workers else 0
    return [(p, tl, out, c, list(range(k, tl.n_windows, n)), k == 0, erasure_requests)
            for c in range(n_chunks)
            for n in [parts if c >= n_chunks - split else 1] for k in range(n)]


def _erasure_candidates(pop: Population, rng: np.random.Generator, k: int) -> list[tuple]:
    ok = np.flatnonzero((pop.c_k == 0) & ~pop.c_is_update & (pop.c_email_variant == 0))
    if k <= 0 or len(ok) == 0:
        return []
    pick = rng.choice(ok, min(k, len(ok)), replace=False)
    cid = contact_ids(pop.c_key[pick]).to_pylist()
    em = emails(pop, pop.c_person[pick]).to_pylist()
    pid = person_ids(pop.pid[pop.c_person[pick]]).to_pylist()
    return list(zip(pid, cid, em, strict=True))


def _write_erasure(writer: _Writer, truth: _Truth, pool: list[tuple], n: int, seed: int,
                   day: date, tag: str) -> int:
    if n <= 0 or not pool:
        return 0
    rng = np.random.default_rng([seed, 40, day.toordinal()])
    pick = rng.choice(len(pool), min(n, len(pool)), replace=False)
    rows, truth_rows = [], []
    for i, j in enumerate(sorted(pick.tolist())):
        pid, cid, em = pool[j]
        rid = f"ER-{tag}-{i + 1:05d}"
        by_contact = i % 2 == 0
        email = "" if by_contact else (em.upper() if i % 4 == 1 else em)
        at = f"{day - timedelta(days=1)}T{8 + i % 10:02d}:{(7 * i) % 60:02d}:00Z"
        rows.append(f"{rid},{cid if by_contact else ''},{email},{at}\n")
        truth_rows.append((rid, pid, cid, em))
    writer.write("erasure", f"erasure_{day}.csv", "request_id,contact_id,email,requested_at",
                 pa.array(rows), gz=False)
    truth.add("erasure_requests.csv", pa.table({
        "request_id": [r[0] for r in truth_rows], "person_id": [r[1] for r in truth_rows],
        "contact_id": [r[2] for r in truth_rows], "email": [r[3] for r in truth_rows]}))
    return len(rows)


def _existing(out: Path) -> list[Path]:
    return [f for s in SOURCES if (out / s).is_dir() for f in (out / s).iterdir()]


def generate(out: Path, customers: int, seed: int, *, truth_dir: Path | None = None,
             start_date: date | None = None, days: int = DEFAULT_DAYS, window_days: int = 7,
             delta_day: bool = False, bad_rows: bool = True, bad_row_rate: float = 0.0003,
             erasure_requests: int = 0, visitor_ratio: float = 0.3, gzip_level: int = 1,
             clean: bool = False, progress: bool = False,
             workers: int | None = None) -> GenerationSummary:
    """Generate a landing zone (or, with ``delta_day``, one more day on top of one).

    Same arguments => byte-identical files, whatever the number of ``workers``
    (processes; default: up to 2 CPU cores). Truth files go to ``truth_dir``
    (default ``<out>/../truth``), never inside the landing dir.
    """
    t_start = time.perf_counter()
    out = Path(out).resolve()
    truth_dir = Path(truth_dir).resolve() if truth_dir else out.parent / "truth"
    if truth_dir == out or out in truth_dir.parents:
        raise ValueError(f"truth dir {truth_dir} must not be inside the landing dir {out}")
    if customers < 1:
        raise ValueError("customers must be >= 1")
    if start_date is None:
        start_date = DEFAULT_END - timedelta(days=days)
    p = Params(customers=customers, seed=seed, start=start_date, days=days,
               window_days=window_days, bad_rows=bad_rows, bad_row_rate=bad_row_rate,
               visitor_ratio=visitor_ratio, gzip_level=gzip_level)
    summary = GenerationSummary(out=out, truth_dir=truth_dir)
    if delta_day:
        from .delta import generate_delta

        generate_delta(p, out, truth_dir, summary, erasure_requests, progress)
    else:
        _generate_history(p, out, truth_dir, summary, erasure_requests, clean, progress,
                          default_workers() if workers is None else workers)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _pool(workers: int) -> multiprocessing.pool.Pool:
    # fork: workers start instantly and share the imported modules; spawn elsewhere.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ctx.Pool(workers, maxtasksperchild=None)


def _generate_history(p: Params, out: Path, truth_dir: Path, summary: GenerationSummary,
                      erasure_requests: int, clean: bool, progress: bool,
                      workers: int) -> None:
    existing = _existing(out)
    if existing and not clean:
        raise FileExistsError(
            f"{out} already holds {len(existing)} landing files; use clean=True (--clean) to "
            "replace them, or --delta-day to add a day")
    if clean:
        for s in SOURCES:
            shutil.rmtree(out / s, ignore_errors=True)
        shutil.rmtree(truth_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    tl = Timeline(p.start, p.days, p.window_days)
    n_chunks = -(-p.total_persons // CHUNK_PERSONS)
    writer = _Writer(out, truth_dir, p, [p.seed, 50], summary)
    truth = _Truth(truth_dir, append=False)
    pool: list[tuple] = []
    tasks = _history_tasks(p, tl, out, n_chunks, workers, erasure_requests)
    with tqdm(total=n_chunks * tl.n_windows, desc="generate", unit="window", file=sys.stderr,
              disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            results: Iterator[_ChunkResult] = map(_history_task, tasks)
            for res in results:
                _apply(res, writer, truth, summary, bar)
                pool += res.erasure_pool
        else:
            warm_caches()  # lookup tables: built once, inherited by the forked workers
            warm_event_vocab()
            with _pool(min(workers, len(tasks))) as procs:
                for res in procs.imap(_history_task, tasks):
                    _apply(res, writer, truth, summary, bar)
                    pool += res.erasure_pool
    end_day = tl.delivery_date(tl.n_windows - 1)
    summary.erasure_requests = _write_erasure(writer, truth, pool, erasure_requests, p.seed,
                                              end_day, "H")
    if p.bad_rows:
        writer.write_bad_file(tl.delivery_date(tl.n_windows // 2))
    writer.finish()
    _write_bad_truth(truth, writer)
    truth.close()
    meta = {"seed": p.seed, "customers": p.customers, "start_date": str(p.start),
            "days": p.days, "window_days": p.window_days, "visitor_ratio": p.visitor_ratio,
            "bad_rows": p.bad_rows, "bad_row_rate": p.bad_row_rate,
            "chunk_persons": CHUNK_PERSONS, "delta_days": []}
    (truth_dir / "generation.json").write_text(json.dumps(meta, indent=2) + "\n")


def _write_bad_truth(truth: _Truth, writer: _Writer) -> None:
    rows = writer.bad
    truth.add("bad_records.csv", pa.table({
        "source": pa.array([r[0] for r in rows], pa.string()),
        "source_file": pa.array([r[1] for r in rows], pa.string()),
        "line_number": pa.array([r[2] for r in rows], pa.int64()),
        "kind": pa.array([r[3] for r in rows], pa.string()),
    }))


__all__ = ["GenerationSummary", "generate"]
