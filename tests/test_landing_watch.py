"""The landing Asset's watcher: one event per batch of new settled files, a cursor that
survives restarts without losing a delivery, never a delete, never the warehouse."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamManager

from segment_warehouse import landing_watch
from segment_warehouse.landing_watch import (
    CURSOR_FILE,
    Cursor,
    LandingDeliveryTrigger,
    LandingScanner,
    LandingStreamProducer,
)

SETTLE = 0.3
POLL = 0.05
EVENT_TIMEOUT = 10.0  # generous: the machine is shared


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    for source in ("crm", "analytics", "transactions"):
        (landing / source).mkdir(parents=True)
    return landing


def cursor_path(zone: Path) -> Path:
    return zone.parent / "warehouse" / CURSOR_FILE


def trigger(zone: Path, **kw: Any) -> LandingDeliveryTrigger:
    return LandingDeliveryTrigger(
        landing_dir=str(zone),
        cursor_path=str(cursor_path(zone)),
        settle_seconds=kw.pop("settle_seconds", SETTLE),
        poll_interval=kw.pop("poll_interval", POLL),
        **kw,
    )


CONTACTS = b"contact_id,updated_at\n1,2026-12-01\n"


def deliver(zone: Path, rel: str, body: bytes = CONTACTS, *, age: float = 60.0) -> Path:
    """A delivered file whose mtime is ``age`` seconds old (0: being written now)."""
    path = zone / rel
    path.write_bytes(body)
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def files_of(payload: dict) -> list[str]:
    return [f["file"] for f in payload["files"]]


class Running:
    """A trigger's run() driven like the triggerer does: each event is taken and the
    generator resumed at once."""

    def __init__(self, trig: LandingDeliveryTrigger) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.task = asyncio.create_task(self._drive(trig))

    async def _drive(self, trig: LandingDeliveryTrigger) -> None:
        async for event in trig.run():
            assert isinstance(event, TriggerEvent)
            json.dumps(event.payload)  # what the metadata DB stores
            await self.queue.put(event.payload)

    async def next(self, timeout: float = EVENT_TIMEOUT) -> dict:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def nothing_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty(), self.queue.get_nowait()
        assert not self.task.done(), self.task

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def test_is_a_valid_asset_watcher_trigger(zone: Path) -> None:
    from airflow.sdk import AssetWatcher

    trig = trigger(zone)
    assert isinstance(trig, BaseEventTrigger)
    AssetWatcher(name="w", trigger=trig)  # the SDK refuses other triggers
    classpath, kwargs = trig.serialize()
    assert classpath == "segment_warehouse.landing_watch.LandingDeliveryTrigger"
    again = LandingDeliveryTrigger(**kwargs)  # what the triggerer does
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())


def test_a_new_settled_file_is_one_event_and_nothing_is_deleted(zone: Path) -> None:
    path = deliver(zone, "crm/contacts_001.csv")

    async def scenario() -> dict:
        run = Running(trigger(zone))
        payload = await run.next()
        await run.nothing_for(0.5)  # reported once, not on every poll
        await run.stop()
        return payload

    payload = asyncio.run(scenario())
    assert files_of(payload) == ["crm/contacts_001.csv"]
    assert payload["sources"] == {"crm": 1} and payload["file_count"] == 1
    assert payload["files"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes().startswith(b"contact_id")  # still there, untouched
    cursor = json.loads(cursor_path(zone).read_text())
    assert [d["file"] for d in cursor["reported"]] == ["crm/contacts_001.csv"]


def test_files_that_arrive_together_make_one_event(zone: Path) -> None:
    deliver(zone, "transactions/orders_002.csv", b"order_id\n2\n")
    deliver(zone, "analytics/events_001.jsonl", b'{"messageId": "m1"}\n')
    deliver(zone, "transactions/orders_001.csv", b"order_id\n1\n")

    async def scenario() -> dict:
        run = Running(trigger(zone))
        payload = await run.next()
        await run.nothing_for(0.5)
        await run.stop()
        return payload

    payload = asyncio.run(scenario())
    # source by source, in name order within a source (the loader's order)
    assert files_of(payload) == [
        "analytics/events_001.jsonl",
        "transactions/orders_001.csv",
        "transactions/orders_002.csv",
    ]
    assert payload["sources"] == {"analytics": 1, "transactions": 2}
    assert payload["file_count"] == 3 and payload["bytes"] == 11 + 20 + 11


def test_an_unsettled_file_waits_until_it_settles(zone: Path) -> None:
    path = zone / "analytics" / "events_002.jsonl"

    async def scenario() -> dict:
        run = Running(trigger(zone, settle_seconds=1.0))
        with path.open("wb") as fh:  # an upload in progress: it grows for ~1.5 s
            for i in range(15):
                fh.write(b'{"messageId": "m%d"}\n' % i)
                fh.flush()
                await asyncio.sleep(0.1)
                assert run.queue.empty(), "reported while still being written"
        payload = await run.next()
        await run.stop()
        return payload

    payload = asyncio.run(scenario())
    assert files_of(payload) == ["analytics/events_002.jsonl"]
    assert payload["files"][0]["bytes"] == path.stat().st_size  # the whole file
    # not before it was unchanged for settle_seconds
    detected = datetime.fromisoformat(payload["detected_at"]).timestamp()
    assert detected - path.stat().st_mtime >= 1.0


def test_a_gzip_delivery_is_reported_by_its_stored_bytes(zone: Path) -> None:
    body = gzip.compress(b"order_id,order_ts\n1,2026-12-01T10:00:00Z\n")
    deliver(zone, "transactions/orders_003.csv.gz", body)

    async def scenario() -> dict:
        run = Running(trigger(zone))
        payload = await run.next()
        await run.stop()
        return payload

    payload = asyncio.run(scenario())
    assert files_of(payload) == ["transactions/orders_003.csv.gz"]
    # the loader's sha256 (of the file as delivered, compressed)
    assert payload["files"][0]["sha256"] == hashlib.sha256(body).hexdigest()


def test_unknown_folders_links_and_loose_files_are_ignored(zone: Path) -> None:
    (zone / "marketing").mkdir()
    deliver(zone, "marketing/campaigns.csv")
    deliver(zone, "readme.csv")
    (zone / "crm" / "nested").mkdir()
    deliver(zone, "crm/nested/contacts.csv")
    outside = deliver(zone.parent, "outside.csv")
    (zone / "crm" / "link.csv").symlink_to(outside)

    async def scenario() -> dict:
        run = Running(trigger(zone))
        await run.nothing_for(1.0)
        deliver(zone, "crm/contacts_002.csv")  # the watcher is alive and sees real ones
        payload = await run.next()
        await run.stop()
        return payload

    assert files_of(asyncio.run(scenario())) == ["crm/contacts_002.csv"]


def test_restart_loses_nothing_and_reports_nothing_twice(zone: Path) -> None:
    deliver(zone, "crm/contacts_001.csv", b"a\n")

    async def scenario() -> list[list[str]]:
        seen = []
        run = Running(trigger(zone))  # first triggerer: reports and commits file 1
        seen.append(files_of(await run.next()))
        await asyncio.sleep(0.2)
        await run.stop()

        # a delivery while no triggerer runs; then one is detected, but the triggerer
        # dies before the event is handed over (the generator is never resumed)
        deliver(zone, "crm/contacts_002.csv", b"b\n")
        gen = trigger(zone).run()
        seen.append(files_of((await asyncio.wait_for(anext(gen), EVENT_TIMEOUT)).payload))
        await gen.aclose()

        deliver(zone, "crm/contacts_003.csv", b"c\n")
        run = Running(trigger(zone))  # after the restart: 2 again (never lost), 3, not 1
        seen.append(files_of(await run.next()))
        await run.nothing_for(0.5)
        await run.stop()
        return seen

    first, crashed, after = asyncio.run(scenario())
    assert first == ["crm/contacts_001.csv"]
    assert crashed == ["crm/contacts_002.csv"]
    assert after == ["crm/contacts_002.csv", "crm/contacts_003.csv"]
    reported = json.loads(cursor_path(zone).read_text())["reported"]
    assert sorted(d["file"] for d in reported) == [f"crm/contacts_00{i}.csv" for i in (1, 2, 3)]


def scan(scanner: LandingScanner, polls: int = 2) -> list[str]:
    """``polls`` polls a settle period apart (deterministic clock)."""
    found: list[str] = []
    for _ in range(polls):
        found += [d.file for d in scanner.poll(now=time.time() + 3600)]
    return found


def test_content_decides_not_the_name(zone: Path) -> None:
    cursor = Cursor(cursor_path(zone))
    scanner = LandingScanner(zone, cursor, settle_seconds=SETTLE)
    deliver(zone, "crm/a.csv", b"same\n")
    assert scan(scanner) == ["crm/a.csv"]
    scanner.commit(scanner.inflight.values())
    deliver(zone, "crm/b.csv", b"same\n")  # a copy under a new name: no new content
    assert scan(scanner) == []
    # a file rewritten in place is new content (the loader then reports the change)
    deliver(zone, "crm/a.csv", b"changed\n", age=30)
    assert scan(scanner) == ["crm/a.csv"]
    # a copy that kept an old mtime (cp -p of a backfill file) is still new
    deliver(zone, "crm/backfill_2025.csv", b"old data\n", age=400 * 86400)
    assert scan(scanner) == ["crm/backfill_2025.csv"]


def test_an_unreadable_cursor_reports_everything_again(zone: Path) -> None:
    deliver(zone, "crm/a.csv")
    path = cursor_path(zone)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert scan(LandingScanner(zone, Cursor(path), settle_seconds=SETTLE)) == ["crm/a.csv"]


def test_the_cursor_advances_only_for_stored_events(zone: Path) -> None:
    """advance(): an event Airflow did not store (failed, or no subscriber) is emitted
    again; a stored one is written to the cursor."""
    deliver(zone, "crm/a.csv")
    kwargs = trigger(zone).serialize()[1]

    async def scenario() -> list[Any]:
        producer = LandingStreamProducer(kwargs)
        stream = producer.open_stream()
        seen = []
        payload, deliveries = await asyncio.wait_for(anext(stream), EVENT_TIMEOUT)
        seen.append(files_of(payload))
        await producer.advance([AdvanceItem(deliveries, AdvanceOutcome(acked=0, failed=1))])
        seen.append(cursor_path(zone).exists())
        payload, deliveries = await asyncio.wait_for(anext(stream), EVENT_TIMEOUT)
        seen.append(files_of(payload))
        await producer.advance([AdvanceItem(deliveries, AdvanceOutcome(acked=0, failed=0))])
        payload, deliveries = await asyncio.wait_for(anext(stream), EVENT_TIMEOUT)
        await producer.advance([AdvanceItem(deliveries, AdvanceOutcome(acked=1, failed=0))])
        seen.append(cursor_path(zone).exists())
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [["crm/a.csv"], False, ["crm/a.csv"], True]


def test_the_triggerer_shared_stream_commits_after_the_event_is_persisted(zone: Path) -> None:
    """The triggerer's own path (SharedStreamManager, ack mode): the cursor is written
    only once the metadata DB confirmed the event."""
    deliver(zone, "crm/a.csv")
    trig = trigger(zone)
    key = trig.shared_stream_key()

    async def scenario() -> tuple[list[str], bool, bool]:
        manager = SharedStreamManager(ack_timeout=60)
        events: AsyncIterator[TriggerEvent] = trig.filter_shared_stream(
            manager.subscribe(trigger_id=1, trigger=trig, key=key)
        )
        event = await asyncio.wait_for(anext(events), EVENT_TIMEOUT)
        seq = manager.bind_pending_event(trigger_id=1, key=key)  # as run_trigger does
        assert seq is not None
        waiting = asyncio.create_task(anext(events))  # the runner asks for the next one
        await asyncio.sleep(0.3)
        before = cursor_path(zone).exists()
        manager.confirm_persisted([seq])  # the supervisor stored the asset event
        for _ in range(100):
            if cursor_path(zone).exists():
                break
            await asyncio.sleep(0.05)
        after = cursor_path(zone).exists()
        waiting.cancel()
        await manager.unsubscribe(1, key)
        await manager.stop_all()
        return files_of(event.payload), before, after

    files, before, after = asyncio.run(scenario())
    assert files == ["crm/a.csv"]
    assert before is False and after is True


def test_the_trigger_never_opens_the_warehouse(zone: Path, monkeypatch) -> None:
    import duckdb

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the watcher opened DuckDB")

    monkeypatch.setattr(duckdb, "connect", refuse)
    deliver(zone, "crm/a.csv")
    assert scan(LandingScanner(zone, Cursor(cursor_path(zone)), settle_seconds=SETTLE)) == [
        "crm/a.csv"
    ]


def test_landing_asset_watches_the_configured_zone(segments_env: Path) -> None:
    asset = landing_watch.landing_asset()
    assert asset.uri == landing_watch.LANDING_ASSET_URI
    (watcher,) = asset.watchers
    kwargs = watcher.trigger.serialize()[1]
    assert kwargs["landing_dir"] == os.environ["SEGMENTS_LANDING_DIR"]
    assert kwargs["cursor_path"] == str(Path(os.environ["SEGMENTS_WAREHOUSE_DIR"]) / CURSOR_FILE)
    assert kwargs["sources"] == ["crm", "analytics", "transactions", "erasure"]
