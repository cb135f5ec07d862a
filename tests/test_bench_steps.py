"""make bench's intraday and rules-change steps (segment_tools.bench)."""

from __future__ import annotations

import gzip
from pathlib import Path

import yaml
from segment_tools.bench import _rows_in, change_one_priority, hold_back_intraday

from segment_warehouse.config import REPO_ROOT
from segment_warehouse.personalisation.rules import load_rules


def test_the_name_last_new_file_of_each_source_is_held_back(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for source, names in {
        "analytics": ["events_2026-11-22_000.jsonl", "events_2026-11-23_000.jsonl",
                      "events_2026-11-23_001.jsonl"],
        "transactions": ["orders_2026-11-23_000.csv.gz"],
        "crm": ["contacts_2026-11-23.csv"],
    }.items():  # fmt: skip
        (landing / source).mkdir(parents=True)
        for name in names:
            (landing / source / name).write_text("x\n")
    new = {p for p in landing.rglob("*2026-11-23*")}
    held = hold_back_intraday(landing, new, tmp_path / "aside")
    assert held == [
        landing / "analytics" / "events_2026-11-23_001.jsonl",
        landing / "transactions" / "orders_2026-11-23_000.csv.gz",
    ]
    assert not any(p.exists() for p in held)
    assert (tmp_path / "aside" / "analytics" / "events_2026-11-23_001.jsonl").exists()
    assert (landing / "analytics" / "events_2026-11-23_000.jsonl").exists()
    assert (landing / "crm" / "contacts_2026-11-23.csv").exists()


def test_rows_in_counts_data_rows(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv.gz"
    with gzip.open(csv, "wt") as fh:
        fh.write("order_id,status\n1,completed\n2,refunded\n")
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    assert _rows_in(csv) == 2 and _rows_in(jsonl) == 3


def test_the_rules_change_is_one_priority_and_stays_valid(tmp_path: Path) -> None:
    rules = tmp_path / "content_rules.yml"
    rules.write_bytes((REPO_ROOT / "personalisation" / "content_rules.yml").read_bytes())
    before = yaml.safe_load(rules.read_text())
    change_one_priority(rules)
    after = yaml.safe_load(rules.read_text())
    assert after["rules"][0]["priority"] == before["rules"][0]["priority"] + 1
    after["rules"][0]["priority"] = before["rules"][0]["priority"]
    assert after == before
    load_rules(rules)  # the edited file still passes the strict rules validation
