"""Decision API over the published snapshot (DESIGN.md section 7).

``GET /v1/decisions?customer_id=…&slot=…`` or ``?anonymous_id=…&slot=…``
answers ``{"customer_id", "slot", "content_id", "rule_id", "experiment_id",
"variant"}``; an unknown or non-consenting visitor gets the slot's default.
``GET /health`` describes the snapshot being served.

How it stays fast and consistent:

* The snapshot (``analytics.duckdb``) is read once, read-only, into an
  immutable in-memory index (:class:`Snapshot`): sorted numpy byte-string
  arrays of customer ids and anonymous ids (binary search, about 20
  comparisons at 1 M customers) and a customers x slots matrix of small
  integer codes pointing at pre-rendered JSON fragments. A request touches no
  database and no lock. (Why not query DuckDB per request: the published
  tables carry no index, so a point lookup scans row groups; and a dict of a
  million Python strings costs several times the memory of these arrays.)
* Publishing replaces the file with ``os.replace`` (a new inode). At most
  every ``RELOAD_CHECK_SECONDS`` a request stats the path; a new inode/mtime
  starts a background load while the old index keeps serving. The new index
  is swapped in with one reference assignment, and every request reads that
  reference exactly once, so an answer never mixes two snapshots. The
  ``X-Snapshot`` response header names the snapshot an answer came from.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import duckdb
import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response

from segment_warehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 0.5


class SnapshotError(RuntimeError):
    """The published snapshot cannot be served (missing tables, unreadable)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_bytes(values: np.ndarray) -> np.ndarray:
    """Object array of ``str`` -> fixed-width UTF-8 byte strings (numpy ``S``)."""
    if values.size == 0:
        return np.array([], dtype="S1")
    try:
        return values.astype(np.bytes_)  # vectorised, ASCII only
    except UnicodeEncodeError:
        return np.asarray([v.encode("utf-8") for v in values], dtype=np.bytes_)


def _find(keys: np.ndarray, key: str) -> int:
    """Index of ``key`` in the sorted array ``keys``, or -1."""
    raw = key.encode("utf-8")
    # numpy would truncate a longer key to the array's width and could then
    # report a false match; a NUL would be stripped the same way.
    if not raw or len(raw) > keys.dtype.itemsize or b"\x00" in raw or keys.size == 0:
        return -1
    i = int(np.searchsorted(keys, raw))
    return i if i < keys.size and keys[i] == raw else -1


@dataclass(frozen=True)
class Snapshot:
    """Everything one answer needs, from one published file. Immutable."""

    file_key: tuple[int, int, int]  # (st_dev, st_ino, st_mtime_ns) when loaded
    label: str  # published_at / run_id: the X-Snapshot header
    info: dict[str, Any]
    slot_index: dict[str, int]
    default_tails: tuple[bytes, ...]  # per slot: JSON after "customer_id" for the default
    tails: tuple[bytes, ...]  # per decision code: JSON after "customer_id"
    customer_keys: np.ndarray  # sorted S<n>
    codes: np.ndarray  # int32 [customers, slots]; -1 = default
    anonymous_keys: np.ndarray  # sorted S<n>
    anonymous_customer: np.ndarray  # object array: customer_id per anonymous_keys position

    def answer(self, slot: str, customer_id: str | None, anonymous_id: str | None) -> bytes:
        s = self.slot_index[slot]
        cid = customer_id
        if anonymous_id is not None:
            j = _find(self.anonymous_keys, anonymous_id)
            cid = str(self.anonymous_customer[j]) if j >= 0 else None
        tail = self.default_tails[s]
        if cid is not None:
            i = _find(self.customer_keys, cid)
            if i >= 0:
                code = int(self.codes[i, s])
                if code >= 0:
                    tail = self.tails[code]
        return b'{"customer_id":' + _dumps(cid).encode() + tail


def _tail(slot: str, content: str, rule: str | None, experiment: str | None,
          variant: str | None) -> bytes:
    return (
        f',"slot":{_dumps(slot)},"content_id":{_dumps(content)},"rule_id":{_dumps(rule)},'
        f'"experiment_id":{_dumps(experiment)},"variant":{_dumps(variant)}}}'
    ).encode()


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()[0][0])


def load_snapshot(path: Path) -> Snapshot:
    """Read the decision index out of a published snapshot file.

    DuckDB numbers the distinct decisions; numpy sorts the ids and fills the
    code matrix in a few vectorised steps (no per-row Python work, which would
    dominate at millions of rows).
    """
    try:
        before = os.stat(path)
    except FileNotFoundError as exc:
        raise SnapshotError(f"no published snapshot at {path}") from exc
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("set enable_progress_bar = false")
        for schema, table in (
            ("personalisation", "content_slots"),
            ("personalisation", "content_decisions"),
        ):
            if not _table_exists(con, schema, table):
                raise SnapshotError(f"snapshot {path} has no {schema}.{table} (run decide)")
        info: dict[str, Any] = {}
        if _table_exists(con, "meta", "snapshot_info"):
            cur = con.execute("select * from meta.snapshot_info")
            row = cur.fetchall()
            if row:
                info = {d[0]: v for d, v in zip(cur.description, row[0], strict=True)}
        slots = con.execute(
            "select slot_id, default_content_id, rules_version "
            "from personalisation.content_slots order by position"
        ).fetchall()
        slot_index = {s: i for i, (s, _, _) in enumerate(slots)}
        con.execute(
            """
            create temp table combos as
            select row_number() over (
                       order by slot_id, content_id, rule_id, experiment_id, variant
                   )::integer - 1 as code, *
            from (select distinct slot_id, content_id, rule_id, experiment_id, variant
                  from personalisation.content_decisions)
            """
        ).fetchall()
        combos = con.execute(
            "select slot_id, content_id, rule_id, experiment_id, variant from combos order by code"
        ).fetchall()
        rows = con.execute(
            """
            select d.customer_id, s.position - min(s.position) over ()
                       as slot_position, c.code
            from personalisation.content_decisions d
            join personalisation.content_slots s using (slot_id)
            join combos c
              on c.slot_id = d.slot_id and c.content_id = d.content_id
             and c.rule_id is not distinct from d.rule_id
             and c.experiment_id is not distinct from d.experiment_id
             and c.variant is not distinct from d.variant
            """
        ).fetchnumpy()
        anon: dict[str, np.ndarray] = {"source_id": np.array([]), "customer_id": np.array([])}
        if _table_exists(con, "marts", "identity_map"):
            anon = con.execute(
                "select source_id, customer_id from marts.identity_map "
                "where source = 'analytics' and source_id is not null and source_id <> ''"
            ).fetchnumpy()
    finally:
        con.close()

    customer_keys, inverse = np.unique(_as_bytes(rows["customer_id"]), return_inverse=True)
    codes = np.full((customer_keys.size, len(slots)), -1, dtype=np.int32)
    # slot positions are dense 0..n-1 (content_slots is written in file order)
    codes[inverse.reshape(-1), np.asarray(rows["slot_position"], dtype=np.int64)] = np.asarray(
        rows["code"], dtype=np.int32
    )
    anonymous_raw = _as_bytes(anon["source_id"])
    order = np.argsort(anonymous_raw, kind="stable")
    anonymous_keys = anonymous_raw[order]
    anon_customers = np.asarray(anon["customer_id"], dtype=object)[order]
    after = os.stat(path)
    key = (after.st_dev, after.st_ino, after.st_mtime_ns)
    if (before.st_ino, before.st_mtime_ns) != (after.st_ino, after.st_mtime_ns):
        # Replaced while we read it (we read one consistent file, the old or
        # the new one); the caller retries so the key matches what we read.
        raise SnapshotError("snapshot was replaced while loading")
    published = info.get("published_at")
    label = (
        published.isoformat() if isinstance(published, dt.datetime) else str(published or "")
    ) or f"inode-{after.st_ino}-{after.st_mtime_ns}"
    return Snapshot(
        file_key=key,
        label=label,
        info={
            "path": str(path),
            "published_at": label,
            "run_id": info.get("run_id"),
            "rules_version": slots[0][2] if slots else None,
            "customers": int(customer_keys.size),
            "slots": list(slot_index),
        },
        slot_index=slot_index,
        default_tails=tuple(_tail(s, d, None, None, None) for s, d, _ in slots),
        tails=tuple(_tail(*c) for c in combos),
        customer_keys=customer_keys,
        codes=codes,
        anonymous_keys=anonymous_keys,
        anonymous_customer=anon_customers,
    )


class SnapshotStore:
    """Holds the current :class:`Snapshot` and swaps in new ones in the background."""

    def __init__(self, path: Path, check_seconds: float = RELOAD_CHECK_SECONDS) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        self.loaded_at: str | None = None
        self.reloads = 0
        self._next_check = 0.0
        self._loading = threading.Lock()
        self._load(blocking=True)

    def _file_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns)

    def _load(self, blocking: bool) -> None:
        if not self._loading.acquire(blocking=blocking):
            return  # a load is already running
        try:
            for _ in range(3):
                try:
                    snap = load_snapshot(self.path)
                except SnapshotError as exc:
                    self.last_error = str(exc)
                    if "replaced while loading" in str(exc):
                        continue
                    log.warning("decision API keeps the previous snapshot: %s", exc)
                    return
                except duckdb.Error as exc:
                    self.last_error = f"cannot read {self.path}: {exc}"
                    log.warning("decision API keeps the previous snapshot: %s", exc)
                    return
                self.current = snap  # one reference assignment: the swap
                self.last_error = None
                self.loaded_at = dt.datetime.now(dt.UTC).isoformat()
                self.reloads += 1
                log.info("decision API serving snapshot %s", snap.label)
                return
        finally:
            self._loading.release()

    def get(self) -> Snapshot | None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_seconds
            key = self._file_key()
            snap = self.current
            if key is not None and (snap is None or key != snap.file_key):
                threading.Thread(target=self._load, args=(False,), daemon=True).start()
        return self.current


def _error_body(message: str, **extra: Any) -> bytes:
    return _dumps({"error": message, **extra}).encode()


def answer_request(
    store: SnapshotStore, slot: str | None, customer_id: str | None, anonymous_id: str | None
) -> tuple[int, bytes, str]:
    """(status, JSON body, snapshot label) for one decision request."""
    if not slot:
        return 422, _error_body("query parameter 'slot' is required"), ""
    if (customer_id is None) == (anonymous_id is None):
        return 422, _error_body(
            "give exactly one of the query parameters customer_id, anonymous_id"
        ), ""
    snap = store.get()  # read once: the whole answer comes from this snapshot
    if snap is None:
        return 503, _error_body("no published decisions yet", detail=store.last_error), ""
    if slot not in snap.slot_index:
        return 404, _error_body(f"unknown slot {slot!r}", slots=list(snap.slot_index)), snap.label
    return 200, snap.answer(slot, customer_id, anonymous_id), snap.label


class DecisionsFastPath:
    """ASGI middleware answering ``GET /v1/decisions`` before FastAPI's routing.

    The answer is a lookup costing microseconds; FastAPI's per-request routing,
    parameter validation and response classes cost several times that. Same
    function (:func:`answer_request`) and contract as the documented FastAPI
    route below, which serves the request when the fast path is off.
    """

    def __init__(self, app: Any, store: SnapshotStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/v1/decisions"
            or scope["method"] not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        params: dict[str, str] = {}
        for key, value in parse_qsl(
            scope["query_string"].decode("latin-1"), keep_blank_values=True
        ):
            params.setdefault(key, value)  # the first of repeated parameters wins
        status, body, label = answer_request(
            self.store, params.get("slot"), params.get("customer_id"), params.get("anonymous_id")
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if label:
            headers.append((b"x-snapshot", label.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})


def create_app(settings: Settings | None = None, *, fast_path: bool = True) -> FastAPI:
    """The decision API over ``settings.analytics_db`` (read-only)."""
    settings = settings or get_settings()
    store = SnapshotStore(settings.analytics_db)
    app = FastAPI(
        title="Segment warehouse decision API",
        description="Content decisions per customer and slot, from the published snapshot.",
        version="1",
    )
    app.state.store = store
    if fast_path:
        app.add_middleware(DecisionsFastPath, store=store)

    # async handlers: they never block (an index lookup and, every
    # RELOAD_CHECK_SECONDS, one stat), so they run on the event loop instead of
    # paying a thread-pool hop per request.
    @app.get("/health")
    async def health() -> JSONResponse:
        snap = store.current
        body = {
            "status": "ok" if snap is not None else "no_snapshot",
            "snapshot": snap.info if snap is not None else None,
            "loaded_at": store.loaded_at,
            "reloads": store.reloads,
            "last_error": store.last_error,
        }
        return JSONResponse(body, status_code=200 if snap is not None else 503)

    @app.get("/v1/decisions")
    async def decisions(
        slot: str | None = Query(None, description="slot id from the content rules"),
        customer_id: str | None = Query(None, description="unified customer_id"),
        anonymous_id: str | None = Query(None, description="web/app anonymousId"),
    ) -> Response:
        """The content to show one visitor in one slot (exactly one of the two ids)."""
        status, body, label = answer_request(store, slot, customer_id, anonymous_id)
        headers = {"X-Snapshot": label} if label else None
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers)

    return app
