"""Tests for the sample landing-zone generator (small runs, a few seconds in total)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from segment_tools.generator import generate
from segment_tools.generator.render import CRM_HEADER, ORDERS_HEADER

SMALL = {"customers": 400, "seed": 7, "days": 35}
CURRENCIES = {row["currency"] for row in csv.DictReader(
    (Path(__file__).resolve().parents[1] / "dbt_project/seeds/fx_rates.csv").open())}


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8").splitlines()


def _ts_ok(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _bad_reason(source: str, header: list[str], line: str) -> str | None:
    """Contract check of one physical line (ARCHITECTURE.md 'contract checks')."""
    if source == "analytics":
        try:
            obj = json.loads(line)
        except ValueError:
            return "invalid_json"
        if not isinstance(obj, dict) or not obj.get("messageId") or not obj.get("timestamp"):
            return "missing_required"
        if obj["type"] not in ("identify", "page", "track"):
            return "invalid_type"
        return None if _ts_ok(obj["timestamp"]) else "unparseable_timestamp"
    row = dict(zip(header, next(csv.reader([line])), strict=True))
    if source == "crm":
        if not row["contact_id"] or not row["updated_at"]:
            return "missing_required"
        return None if _ts_ok(row["updated_at"]) else "unparseable_timestamp"
    if source == "erasure":
        return None
    req = ("order_id", "order_ts", "status", "currency", "total_amount")
    if any(not row[c] for c in req):
        return "missing_required"
    if not _ts_ok(row["order_ts"]):
        return "unparseable_timestamp"
    if float(row["total_amount"]) < 0:
        return "negative_amount"
    if row["currency"] not in CURRENCIES:
        return "unknown_currency"
    return None


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    generate(root / "landing", erasure_requests=4, workers=1, **SMALL)
    return root


def _files(landing: Path) -> dict[str, bytes]:
    return {str(p.relative_to(landing)): p.read_bytes()
            for p in sorted(landing.rglob("*")) if p.is_file()}


def _truth(root: Path, name: str) -> list[dict[str, str]]:
    with (root / "truth" / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _bad_by_file(root: Path) -> dict[str, dict[int | None, str]]:
    out: dict[str, dict[int | None, str]] = {}
    for r in _truth(root, "bad_records.csv"):
        line = int(r["line_number"]) if r["line_number"] else None
        out.setdefault(r["source_file"], {})[line] = r["kind"]
    return out


def test_same_seed_same_bytes(zone: Path, tmp_path: Path) -> None:
    generate(tmp_path / "landing", erasure_requests=4, **SMALL)
    assert _files(tmp_path / "landing") == _files(zone / "landing")
    assert _files(tmp_path / "truth") == _files(zone / "truth")
    other = tmp_path / "other"
    generate(other / "landing", customers=400, seed=8, days=35)
    assert _files(other / "landing") != _files(zone / "landing")


def test_same_bytes_whatever_the_worker_count(zone: Path, tmp_path: Path) -> None:
    # SMALL is one chunk: two workers split it by delivery window.
    generate(tmp_path / "landing", erasure_requests=4, workers=2, **SMALL)
    assert _files(tmp_path / "landing") == _files(zone / "landing")
    assert _files(tmp_path / "truth") == _files(zone / "truth")


def test_layout_and_truth_dir(zone: Path) -> None:
    landing = zone / "landing"
    names = sorted(_files(landing))
    for src, ext in (("crm", ".csv"), ("analytics", ".jsonl"), ("transactions", ".csv")):
        files = [n for n in names if n.startswith(src + "/")]
        assert len(files) >= 5
        assert any(n.endswith(ext + ".gz") for n in files)
        assert any(n.endswith(ext) for n in files)
    assert any(n.startswith("erasure/erasure_") for n in names)
    assert not (landing / "truth").exists()
    assert (zone / "truth" / "persons.csv").exists()


def test_every_line_meets_the_contract_unless_recorded_bad(zone: Path) -> None:
    landing = zone / "landing"
    bad = _bad_by_file(zone)
    recorded_kinds = Counter()
    for rel in _files(landing):
        source = rel.split("/")[0]
        if rel in bad and None in bad[rel]:
            # The whole-file failure really is unreadable as its source.
            kind = bad[rel][None]
            raw = (landing / rel).read_bytes()
            if kind == "bad_file_not_gzip":
                with pytest.raises(gzip.BadGzipFile):
                    gzip.decompress(raw)
            elif kind == "bad_file_not_utf8":
                with pytest.raises(UnicodeDecodeError):
                    raw.decode("utf-8")
            else:
                assert raw.decode().splitlines()[0] != CRM_HEADER
            continue
        lines = _read_lines(landing / rel)
        header: list[str] = []
        if source != "analytics":
            header = lines[0].split(",")
            expected = {"crm": CRM_HEADER, "transactions": ORDERS_HEADER,
                        "erasure": "request_id,contact_id,email,requested_at"}[source]
            assert lines[0] in (expected, expected + ",notes"), rel
        start = 0 if source == "analytics" else 1
        for no, line in enumerate(lines[start:], start=start + 1):
            reason = _bad_reason(source, header, line)
            expected_bad = bad.get(rel, {}).get(no)
            assert reason == expected_bad, (rel, no, line)
            if expected_bad:
                recorded_kinds[(source, expected_bad)] += 1
    # each kind of bad row is planted at least once
    assert {k for _, k in recorded_kinds} >= {
        "missing_required", "unparseable_timestamp", "negative_amount", "unknown_currency",
        "invalid_json", "invalid_type"}


def test_planted_messiness(zone: Path) -> None:
    landing = zone / "landing"
    contacts = _truth(zone, "crm_contacts.csv")
    per_person = Counter(c["person_id"] for c in contacts)
    assert any(n >= 2 for n in per_person.values()), "duplicate contacts"
    assert any(c["email_kind"] == "placeholder" for c in contacts)
    persons = _truth(zone, "persons.csv")
    assert {p["persona"] for p in persons} >= {
        "high_value_loyal", "discount_driven", "browser_no_purchase", "lapsed", "new",
        "weekend_buyer", "mobile_heavy", "anonymous_visitor"}
    assert any(p["shares_phone_with"] for p in persons), "households"
    anon = _truth(zone, "anonymous_ids.csv")
    bots = {a["anonymous_id"] for a in anon if a["is_bot"] == "true"}
    assert bots and all(not a["person_id"] for a in anon if a["is_bot"] == "true")
    assert any(a["is_shared"] == "true" for a in anon)

    # analytics: redeliveries, bots never logged in, shared device with 2 user ids
    mids: Counter[str] = Counter()
    users_per_anon: dict[str, set[str]] = {}
    bad = _bad_by_file(zone)
    for rel in _files(landing):
        if not rel.startswith("analytics/") or None in bad.get(rel, {}):
            continue
        for no, line in enumerate(_read_lines(landing / rel), start=1):
            if no in bad.get(rel, {}):
                continue
            e = json.loads(line)
            mids[e["messageId"]] += 1
            if e["anonymousId"] in bots:
                assert e["userId"] is None
                assert "bot" in e["context"]["userAgent"].lower()
            if e["userId"]:
                users_per_anon.setdefault(e["anonymousId"], set()).add(e["userId"])
    assert any(n >= 2 for n in mids.values()), "redelivered messageIds"
    assert any(len(u) >= 2 for u in users_per_anon.values()), "shared device"

    # transactions: guest checkouts and refunds delivered as later updates
    seen: dict[str, list[tuple[str, str]]] = {}
    guests = 0
    for rel in sorted(_files(landing)):
        if not rel.startswith("transactions/") or None in bad.get(rel, {}):
            continue
        for row in csv.DictReader(_read_lines(landing / rel)):
            if not row["order_id"]:
                continue
            seen.setdefault(row["order_id"], []).append((rel, row["status"]))
            guests += (not row["contact_id"]) and bool(row["email"])
    assert guests > 0
    refunds = [v for v in seen.values() if v[-1][1] == "refunded" and len(v) >= 2]
    assert any(v[0][0] < v[-1][0] for v in refunds), "refund in a later file"
    final = {o["order_id"]: o["final_status"] for o in _truth(zone, "orders.csv")}
    for oid, versions in seen.items():
        if len(versions) >= 2 and versions[-1][0] > versions[0][0]:
            assert final[oid] == versions[-1][1]


def test_delta_day_adds_files_without_touching_old_ones(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    generate(landing, customers=300, seed=3, days=21)
    before = {k: hashlib.sha256(v).hexdigest() for k, v in _files(landing).items()}
    persons_before = len(_truth(tmp_path, "persons.csv"))
    s = generate(landing, customers=300, seed=3, days=21, delta_day=True, erasure_requests=2)
    after = {k: hashlib.sha256(v).hexdigest() for k, v in _files(landing).items()}
    new = sorted(set(after) - set(before))
    assert new and set(s.files) == set(new)
    assert all(after[k] == v for k, v in before.items())
    for src in ("crm", "analytics", "transactions"):
        old_max = max(k for k in before if k.startswith(src + "/"))
        assert all(k > old_max for k in new if k.startswith(src + "/"))
        assert any(k.startswith(src + "/") for k in new)
    assert len(_truth(tmp_path, "persons.csv")) > persons_before
    # a second delta day is the next date, and reproducible
    s2 = generate(landing, customers=300, seed=3, days=21, delta_day=True)
    assert min(s2.files) > max(s.files[:1]) or all(f not in after for f in s2.files)
    with pytest.raises(ValueError):
        generate(landing, customers=301, seed=3, days=21, delta_day=True)


def test_refuses_to_mix_into_an_existing_zone(zone: Path) -> None:
    with pytest.raises(FileExistsError):
        generate(zone / "landing", **SMALL)
    with pytest.raises(ValueError):
        generate(zone / "landing", truth_dir=zone / "landing" / "truth", **SMALL)


def test_same_bytes_over_several_chunks_whatever_the_worker_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks: 3 chunks, so workers get whole chunks and split only the last one.
    import segment_tools.generator.core as core
    monkeypatch.setattr(core, "CHUNK_PERSONS", 200)
    runs = {}
    for workers in (1, 2, 3):
        root = tmp_path / f"w{workers}"
        s = generate(root / "landing", customers=400, seed=11, days=28, workers=workers)
        runs[workers] = (_files(root / "landing"), _files(root / "truth"))
        assert any(f.endswith("_003.jsonl") or f.endswith("_003.jsonl.gz") for f in s.files)
    assert runs[1] == runs[2] == runs[3]


def _events(zone: Path) -> list[tuple[str, int, dict]]:
    bad = _bad_by_file(zone)
    out = []
    for rel in _files(zone / "landing"):
        if rel.startswith("analytics/") and None not in bad.get(rel, {}):
            for no, line in enumerate(_read_lines(zone / "landing" / rel), start=1):
                if no not in bad.get(rel, {}):
                    out.append((rel, no, json.loads(line)))
    return out


def test_event_shape_and_rates(zone: Path) -> None:
    events = _events(zone)
    assert len(events) > 5000
    kinds: Counter[str] = Counter()
    for rel, no, e in events:
        assert set(e) >= {"messageId", "type", "timestamp", "anonymousId", "userId", "context"}
        ctx = e["context"]
        assert ctx["device"]["type"] in ("mobile", "desktop", "tablet"), (rel, no)
        assert ctx["userAgent"] and ctx["ip"].count(".") == 3
        assert ctx["page"]["url"].startswith("https://shop.example.com/")
        assert "referrer" in ctx["page"]
        assert e["userId"] is None or (e["userId"].startswith("C") and len(e["userId"]) == 10)
        assert len(e["anonymousId"]) == 36 and e["anonymousId"].count("-") == 4
        if e["type"] == "track":
            kinds[e["event"]] += 1
            if e["event"] in ("Product Viewed", "Product Added"):
                assert set(e["properties"]) == {"product_id", "price"}
                assert ctx["page"]["url"].endswith("/p/" + e["properties"]["product_id"][2:])
            else:
                props = e["properties"]
                assert props["order_id"].startswith("ORD-") and props["currency"]
                assert ("revenue" if e["event"] == "Order Completed" else "value") in props
        elif e["type"] == "identify":
            kinds["identify"] += 1
            assert "@" in e["traits"]["email"]
        else:
            assert e["type"] == "page" and e["name"]
            kinds["page"] += 1
        if "campaign" in ctx:
            assert set(ctx["campaign"]) == {"source", "medium", "name"}
    assert all(kinds[k] for k in ("page", "identify", "Product Viewed", "Product Added",
                                  "Checkout Started", "Order Completed"))
    # about 0.5 % of events are delivered twice (same messageId)
    mids = Counter(e["messageId"] for _, _, e in events)
    redelivered = sum(n - 1 for n in mids.values())
    assert 0.002 < redelivered / len(mids) < 0.01
    # landing events carry the campaign: a minority of all events, but present
    with_campaign = sum("campaign" in e["context"] for _, _, e in events)
    assert 0.02 < with_campaign / len(events) < 0.3
    # bad rows: about bad_row_rate of the lines, plus one of each kind
    n_bad = sum(1 for r in _truth(zone, "bad_records.csv")
                if r["source"] == "analytics" and r["line_number"])
    assert 4 <= n_bad <= 4 + 10 * 0.0003 * len(events) + 5


def test_text_helpers_match_reference_formatting() -> None:
    from datetime import UTC, timedelta, timezone

    import numpy as np
    import pyarrow as pa
    from segment_tools.generator.text import _digits_u8, by_code, timestamps

    rng = np.random.default_rng(3)
    ms = rng.integers(1_700_000_000_000, 1_800_000_000_000, 2_000)
    style = rng.integers(0, 4, len(ms)).astype(np.int8)
    offset = rng.choice([-330, -60, 0, 120, 345], len(ms))
    fmt = {0: "%Y-%m-%dT%H:%M:%SZ", 1: "%Y-%m-%d %H:%M:%S"}
    for t, s, o, text in zip(ms, style, offset, timestamps(ms, style, offset).to_pylist(),
                             strict=True):
        utc = datetime.fromtimestamp(t / 1000, tz=UTC).replace(microsecond=int(t % 1000) * 1000)
        if s == 2:
            expect = utc.astimezone(timezone(timedelta(minutes=int(o)))).isoformat(
                timespec="seconds")
        elif s == 3:
            expect = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t % 1000:03d}Z"
        else:
            expect = utc.strftime(fmt[int(s)])
        assert text == expect
    v = rng.integers(0, 10**12, 500)
    for w in (1, 3, 4, 9, 12):
        got = [bytes(r).decode() for r in _digits_u8(v, w)]
        assert got == [f"{x:0{w}d}"[-w:] for x in v.tolist()]
    codes = rng.integers(0, 3, 100)
    out = by_code(codes, lambda c, rows: pa.array([f"{c}:{r}" for r in rows.tolist()])
                  if c else pa.array(["zero"]))
    assert out.to_pylist() == [f"{c}:{i}" if c else "zero" for i, c in enumerate(codes)]
