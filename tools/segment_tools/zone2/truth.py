"""The planted truth, next to the landing zone: persons, records, future buyers."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

from segment_tools.zone2 import render
from segment_tools.zone2.config import ZoneConfig
from segment_tools.zone2.crm import CrmRecord
from segment_tools.zone2.events import Device
from segment_tools.zone2.orders import Order
from segment_tools.zone2.people import Person

PERSON_HEADER = ("person_id", "persona", "household_id", "twin_of", "relation", "country",
                 "gender", "first_name", "last_name", "birth_date", "email", "phone_e164",
                 "marketing_consent", "has_crm", "n_crm_records", "email_habit", "n_orders",
                 "completed_orders", "rate_per_day", "future_rate_per_day", "active_at_as_of",
                 "last_active")
RECORD_HEADER = ("source", "source_id", "person_id", "is_primary", "dup_kind", "shares_email",
                 "shares_phone", "placeholder_email", "placeholder_phone", "is_bot",
                 "is_shared_device", "shared_by", "linkable", "device_type", "email_kind",
                 "status", "consent", "consent_at")


def _norm_email(e: str) -> str:
    return e.strip().lower()


def write_truth(cfg: ZoneConfig, d: Path, persons: list[Person], records: list[CrmRecord],
                orders: list[Order], devices: list[Device]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    recs_by_person: dict[str, list[CrmRecord]] = defaultdict(list)
    for r in records:
        recs_by_person[r.person_id].append(r)
    hist = [o for o in orders if not o.future]
    n_orders = Counter(o.person_id for o in hist)
    completed = Counter(o.person_id for o in hist if o.final_status == "completed")
    person_rows = []
    for p in persons:
        person_rows.append([
            p.person_id, p.persona, p.household_id, p.twin_of, p.relation, p.country, p.gender,
            p.first_name, p.last_name, p.birth_date.isoformat(), p.email, p.phone_e164,
            p.consent, int(p.has_crm), len(recs_by_person.get(p.person_id, [])), p.email_habit,
            n_orders[p.person_id], completed[p.person_id], f"{p.rate_per_day:.6f}",
            f"{p.future_rate_per_day:.6f}", int((cfg.as_of - p.last_active).days <= 45),
            p.last_active.isoformat(),
        ])
    render.write_csv(d / "persons.csv", PERSON_HEADER, person_rows, crlf=False)

    rows: list[list[object]] = []
    for pid, recs in recs_by_person.items():
        for r in recs:
            others = [o for o in recs if o is not r]
            shares_email = any(r.email_true and _norm_email(o.email_true) ==
                               _norm_email(r.email_true) for o in others)
            shares_phone = any(r.phone_e164 and o.phone_e164 == r.phone_e164 for o in others)
            consent, at = r.consent, r.updated_at
            for ts, change in r.updates:
                consent, at = change.get("consent", consent), ts
            rows.append(["crm", r.contact_id, pid, int(r.is_primary), "|".join(r.dup_kind),
                         int(shares_email), int(shares_phone), r.placeholder_email,
                         r.placeholder_phone, 0, 0, "", "", "", "", "", consent,
                         at.isoformat()])
    for o in hist:
        rows.append(["transactions", o.order_id, o.person_id, "", "", "", "", "", "", 0, 0, "",
                     "", o.channel, "logged_in" if o.contact_id else f"guest_{o.email_kind}",
                     o.final_status, "", ""])
    for dev in devices:
        rows.append(["analytics", dev.anonymous_id, dev.person_id, "", "", "", "", "", "",
                     int(dev.is_bot), int(bool(dev.shared_by)), "|".join(dev.shared_by),
                     "|".join(sorted(dev.linked_by)), dev.kind, "", "", "", ""])
    render.write_csv(d / "records.csv", RECORD_HEADER, rows, crlf=False)

    if cfg.holdout_days:
        fut = [o for o in orders if o.future]
        f_all = Counter(o.person_id for o in fut)
        f_done = Counter(o.person_id for o in fut if o.final_status == "completed")
        render.write_csv(
            d / "future_buyers.csv",
            ("person_id", "future_orders", "future_completed_orders", "buyer"),
            [[p.person_id, f_all[p.person_id], f_done[p.person_id],
              int(f_done[p.person_id] > 0)] for p in persons],
            crlf=False,
        )
    meta = asdict(cfg)
    meta["as_of"] = cfg.as_of.isoformat()
    (d / "zone.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
