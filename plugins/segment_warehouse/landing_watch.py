"""Event-driven runs: an Airflow 3 Asset watcher over the landing zone.

:class:`LandingDeliveryTrigger` is the ``AssetWatcher`` trigger of the landing
Asset (:func:`landing_asset`), which schedules ``segment_pipeline`` beside its
daily cron. It runs in the triggerer (``airflow triggerer``) and polls
``SEGMENTS_LANDING_DIR/<source>/`` for the known sources only. A file is a new
delivery when it is a regular file, *settled* (size and mtime unchanged since the
previous poll and its mtime at least ``SEGMENTS_LANDING_SETTLE_SECONDS`` old, the
loader's completeness rule) and its content (sha256) was never reported. Every
poll that finds new deliveries emits **one** event naming all of them, so files
that arrive together start one run; Airflow coalesces further: events queued
while a run is active (``max_active_runs=1``) start a single next run.

Why not a stock trigger: ``FileDeleteTrigger`` (standard provider) fires once per
path and deletes the file, and the landing contract (DESIGN.md §3) forbids
deleting or moving a delivery. A "delivery complete" marker file is not used
either: no loader writes one today, and the settle rule is what the loader
already applies. So the watcher needs a memory of what it reported:

**The cursor** is a small JSON file beside the warehouse
(``SEGMENTS_WAREHOUSE_DIR/landing_watch_cursor.json``; the trigger never opens
``warehouse.duckdb``, whose single writer is the pipeline). It maps each
reported file to its size, mtime and sha256, so a known file is never hashed
again, a renamed copy (same sha256) is not a new delivery, and a file rewritten
in place (new sha256) is reported again (the loader then says it changed). A
high-water mark of mtimes would be smaller but loses files copied with their
original mtime (``cp -p``, ``rsync -t``: typical for a backfill), and losing a
delivery is the one thing the watcher must not do; re-reporting one is harmless
(the loader skips loaded content by sha256).

**At least once.** The cursor advances only after Airflow has stored the asset
event: the trigger uses the triggerer's acknowledged shared stream
(``create_shared_stream_producer``; ``advance`` is called once the event is
persisted in the metadata DB). A triggerer killed between detecting a file and
persisting its event reports the file again after the restart. The standalone
``run()`` (tests, a triggerer without the shared-stream manager) advances the
cursor when the event has been handed over, i.e. when the generator is resumed.

**The as-of date** of an asset-triggered run (it has no logical date, so no
``ds``) is derived by :func:`run_as_of` from the triggering events, see
:func:`segment_warehouse.state.resolve_as_of_date`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat as stat_module
import time
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamProducer

from segment_warehouse.config import SOURCES, Settings, get_settings

log = logging.getLogger("segment_warehouse.landing_watch")

LANDING_ASSET_NAME = "segments_landing"
LANDING_ASSET_URI = "segments://landing/deliveries"
WATCHER_NAME = "landing_deliveries"
CURSOR_FILE = "landing_watch_cursor.json"
CURSOR_VERSION = 1
# The landing zone is listed this often; the run itself dominates latency.
DEFAULT_POLL_SECONDS = 5.0
# Files named in one event's payload (all of them are in the cursor); the asset
# event's extra is a metadata-DB column, not a manifest.
PAYLOAD_MAX_FILES = 20


@dataclass(frozen=True)
class Delivery:
    """One reported landing file (``file`` is relative to the landing dir)."""

    source: str
    file: str
    sha256: str
    size: int
    mtime_ns: int


def _text(rel: str) -> str:
    """A path as text any JSON holds (non-UTF-8 bytes escaped, as the loader does)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _sha256(path: Path) -> str:
    """sha256 of the file's bytes as stored (compressed for .gz), like the loader's;
    never through a link, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat_module.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        digest = hashlib.sha256()
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


class Cursor:
    """The reported deliveries, in a JSON file written atomically (temp + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Delivery]:
        """file -> delivery; an unreadable cursor counts as empty (everything is
        reported again: harmless), never as "all reported"."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != CURSOR_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return {d["file"]: Delivery(**d) for d in data["reported"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "landing cursor %s unreadable (%s): reporting every file again", self.path, exc
            )
            return {}

    def save(self, reported: Mapping[str, Delivery]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = {
            "version": CURSOR_VERSION,
            "updated_at": datetime.now(UTC).isoformat(),
            "reported": [asdict(d) for _, d in sorted(reported.items())],
        }
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=0)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class LandingScanner:
    """What is new in the landing zone, poll after poll (synchronous; one instance per
    watcher). ``inflight`` holds content already emitted but not yet committed."""

    def __init__(
        self,
        landing_dir: Path,
        cursor: Cursor,
        *,
        sources: Sequence[str] = SOURCES,
        settle_seconds: float = 2.0,
    ) -> None:
        self.landing_dir = landing_dir
        self.cursor = cursor
        self.sources = tuple(sources)
        self.settle_seconds = settle_seconds
        self.reported = cursor.load()
        self.reported_sha = {d.sha256 for d in self.reported.values()}
        self.inflight: dict[str, Delivery] = {}  # sha256 -> delivery
        # file -> (size, mtime_ns, sha256) of files hashed so far (no rehash while unchanged)
        self._hashed: dict[str, tuple[int, int, str]] = {
            f: (d.size, d.mtime_ns, d.sha256) for f, d in self.reported.items()
        }
        self._previous: dict[str, tuple[int, int]] = {}  # file -> (size, mtime_ns), last poll

    def poll(self, now: float | None = None) -> list[Delivery]:
        """The settled files whose content was neither reported nor in flight, in source
        and name order (the loader's order); marks them in flight."""
        now = time.time() if now is None else now
        seen: dict[str, tuple[int, int]] = {}
        new: list[Delivery] = []
        for source in self.sources:
            folder = self.landing_dir / source
            try:
                entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat_module.S_ISREG(st.st_mode):
                    continue  # links, folders, FIFOs: the loader refuses them at the next run
                rel = _text(f"{source}/{entry.name}")
                sig = (st.st_size, st.st_mtime_ns)
                seen[rel] = sig
                settled = (
                    self._previous.get(rel) == sig and now - st.st_mtime >= self.settle_seconds
                )
                if not settled:
                    continue
                sha = self._sha_of(Path(entry.path), rel, sig)
                if sha is None or sha in self.reported_sha or sha in self.inflight:
                    continue
                delivery = Delivery(source, rel, sha, *sig)
                self.inflight[sha] = delivery
                new.append(delivery)
        self._previous = seen
        return new

    def _sha_of(self, path: Path, rel: str, sig: tuple[int, int]) -> str | None:
        known = self._hashed.get(rel)
        if known and known[:2] == sig:
            return known[2]
        try:
            sha = _sha256(path)
            after = path.lstat()
        except OSError:
            return None
        if (after.st_size, after.st_mtime_ns) != sig:
            return None  # changed while hashed: not settled after all
        self._hashed[rel] = (*sig, sha)
        return sha

    def commit(self, deliveries: Iterable[Delivery]) -> None:
        """The events naming ``deliveries`` are stored: never report them again."""
        deliveries = list(deliveries)
        for d in deliveries:
            self.inflight.pop(d.sha256, None)
            self.reported[d.file] = d
            self.reported_sha.add(d.sha256)
        if not deliveries:
            return
        try:
            self.cursor.save(self.reported)
        except OSError as exc:
            # The event exists, so the run happens; only a restart re-reports these.
            log.error("landing cursor %s not written (%s)", self.cursor.path, exc)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """The event naming ``deliveries`` was not stored: report them again."""
        for d in deliveries:
            self.inflight.pop(d.sha256, None)


def event_payload(deliveries: Sequence[Delivery], detected_at: datetime) -> dict[str, Any]:
    """What the asset event carries (JSON): which files, per source, when seen."""
    digest = hashlib.sha256("\n".join(sorted(d.sha256 for d in deliveries)).encode())
    sources: dict[str, int] = {}
    for d in deliveries:
        sources[d.source] = sources.get(d.source, 0) + 1
    return {
        "batch": digest.hexdigest()[:16],  # the same files give the same id (dedup)
        "detected_at": detected_at.isoformat(),
        "file_count": len(deliveries),
        "bytes": sum(d.size for d in deliveries),
        "sources": sources,
        "files": [
            {"file": d.file, "sha256": d.sha256, "bytes": d.size}
            for d in deliveries[:PAYLOAD_MAX_FILES]
        ],
    }


class LandingStreamProducer(SharedStreamProducer):
    """Polls the landing zone; the triggerer calls ``advance`` once an event is stored."""

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self.kwargs = dict(kwargs)
        self.poll_interval = float(kwargs.get("poll_interval", DEFAULT_POLL_SECONDS))
        self.scanner: LandingScanner | None = None

    def _scanner(self) -> LandingScanner:
        if self.scanner is None:
            self.scanner = LandingScanner(
                Path(self.kwargs["landing_dir"]),
                Cursor(Path(self.kwargs["cursor_path"])),
                sources=self.kwargs.get("sources", SOURCES),
                settle_seconds=float(self.kwargs.get("settle_seconds", 2.0)),
            )
        return self.scanner

    async def open_stream(self) -> AsyncIterator[tuple[dict[str, Any], list[Delivery]]]:
        scanner = await asyncio.to_thread(self._scanner)
        while True:
            try:
                # listing and hashing block: off the triggerer's event loop
                new = await asyncio.to_thread(scanner.poll)
            except OSError as exc:  # a mount hiccup: try again at the next poll
                log.warning("landing zone %s not listed: %s", scanner.landing_dir, exc)
                new = []
            if new:
                log.info("landing: %d new deliveries %s", len(new), [d.file for d in new[:10]])
                yield event_payload(new, datetime.now(UTC)), new
            await asyncio.sleep(self.poll_interval)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        scanner = self._scanner()
        stored = [d for item in batch if item.outcome.is_clean for d in item.broker_payload]
        lost = [d for item in batch if not item.outcome.is_clean for d in item.broker_payload]
        if lost:
            log.warning("landing: event for %d files not stored, reporting them again", len(lost))
            scanner.release(lost)
        if stored:
            await asyncio.to_thread(scanner.commit, stored)


class LandingDeliveryTrigger(BaseEventTrigger):
    """AssetWatcher trigger: one event per poll that finds new settled landing files.

    :param landing_dir: the landing zone (``SEGMENTS_LANDING_DIR``).
    :param cursor_path: the cursor file (beside the warehouse).
    :param sources: source folders watched; any other folder is ignored.
    :param settle_seconds: how long a file must be unchanged (the loader's rule).
    :param poll_interval: seconds between listings.
    """

    def __init__(
        self,
        *,
        landing_dir: str,
        cursor_path: str,
        sources: Sequence[str] = SOURCES,
        settle_seconds: float = 2.0,
        poll_interval: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        super().__init__()
        self.landing_dir = str(landing_dir)
        self.cursor_path = str(cursor_path)
        self.sources = list(sources)
        self.settle_seconds = float(settle_seconds)
        self.poll_interval = float(poll_interval)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, poll_interval: float = DEFAULT_POLL_SECONDS
    ) -> LandingDeliveryTrigger:
        settings = settings or get_settings()
        return cls(
            landing_dir=str(settings.landing_dir),
            cursor_path=str(settings.warehouse_dir / CURSOR_FILE),
            sources=list(SOURCES),
            settle_seconds=settings.landing_settle_seconds,
            poll_interval=poll_interval,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "landing_dir": self.landing_dir,
                "cursor_path": self.cursor_path,
                "sources": self.sources,
                "settle_seconds": self.settle_seconds,
                "poll_interval": self.poll_interval,
            },
        )

    # --- the triggerer's acknowledged path -----------------------------------
    def shared_stream_key(self) -> Hashable | None:
        # one poll per landing zone and cursor, whatever the number of watchers
        return (
            "segment_warehouse.landing",
            os.path.realpath(self.landing_dir),
            os.path.realpath(self.cursor_path),
        )

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> LandingStreamProducer:
        return LandingStreamProducer(kwargs)

    async def filter_shared_stream(
        self, shared_stream: AsyncIterator[Any]
    ) -> AsyncIterator[TriggerEvent]:
        async for payload in shared_stream:
            yield TriggerEvent(payload)

    # --- standalone ------------------------------------------------------------
    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The same poll without the triggerer's persistence acknowledgement: the
        cursor advances when the consumer asks for the next event."""
        producer = self.create_shared_stream_producer(self.serialize()[1])
        async for payload, deliveries in producer.open_stream():
            yield TriggerEvent(payload)
            await producer.advance([AdvanceItem(deliveries, AdvanceOutcome(acked=1, failed=0))])


def landing_asset(settings: Settings | None = None) -> Any:
    """The landing Asset, watched by :class:`LandingDeliveryTrigger`."""
    from airflow.sdk import Asset, AssetWatcher

    trigger = LandingDeliveryTrigger.from_settings(settings)
    return Asset(
        name=LANDING_ASSET_NAME,
        uri=LANDING_ASSET_URI,
        watchers=[AssetWatcher(name=WATCHER_NAME, trigger=trigger)],
    )


# --- the as-of date of a run ------------------------------------------------------
def event_times(triggering_asset_events: Mapping[Any, Sequence[Any]] | None) -> list[datetime]:
    """Timestamps of the landing Asset's events that triggered the run (others, if the
    DAG ever gets more assets, do not date the data)."""
    times: list[datetime] = []
    for asset, events in (triggering_asset_events or {}).items():
        if getattr(asset, "uri", None) != LANDING_ASSET_URI:
            continue
        times.extend(e.timestamp for e in events)
    return times


def run_as_of(
    ds: str | None,
    triggering_asset_events: Mapping[Any, Sequence[Any]] | None,
    *,
    settings: Settings | None = None,
    today: Any = None,
) -> dict[str, Any]:
    """The run's as-of date and the rule that gave it (recorded in the run's XCom)."""
    from segment_warehouse.state import resolve_as_of_date

    times = event_times(triggering_asset_events)
    as_of = resolve_as_of_date(ds, event_times=times, settings=settings, today=today)
    if ds:
        rule = "logical date"
    elif times:
        rule = "newest landing event (UTC), not before the last build"
    else:
        rule = "last dbt build, else today (no logical date, no landing event)"
    return {"as_of_date": as_of, "as_of_rule": rule, "landing_events": len(times)}


def run_as_of_date(context: Mapping[str, Any]) -> str:
    """The as-of date for a task's Airflow context (``ds`` is absent in
    asset-triggered runs)."""
    return run_as_of(context.get("ds"), context.get("triggering_asset_events"))["as_of_date"]
