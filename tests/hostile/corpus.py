"""The hostile-input corpus: bad deliveries built by code at test time (issue 15).

Each builder writes one landing entry (or a few) and returns what the checks need. Kept
small so the whole corpus loads in seconds.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

CRM_HEADER = (
    "contact_id,email,phone,first_name,last_name,birth_date,gender,country,city,"
    "postal_code,marketing_consent,created_at,updated_at"
)
TX_HEADER = (
    "order_id,contact_id,email,order_ts,status,currency,total_amount,discount_amount,"
    "items_count,channel,updated_at"
)


def crm_row(cid: str, **over: str) -> str:
    fields = {
        "contact_id": cid,
        "email": f"{cid.lower()}@example.com",
        "phone": "(415) 555-0100",
        "first_name": "Ann",
        "last_name": "Lee",
        "birth_date": "1990-05-01",
        "gender": "F",
        "country": "US",
        "city": "Oakland",
        "postal_code": "94103",
        "marketing_consent": "yes",
        "created_at": "2024-01-01",
        "updated_at": "2024-01-02T10:00:00Z",
    }
    fields.update(over)
    return ",".join(fields.values())


def tx_row(oid: str, **over: str) -> str:
    fields = {
        "order_id": oid,
        "contact_id": "c1",
        "email": "",
        "order_ts": "2024-02-01T12:00:00Z",
        "status": "completed",
        "currency": "EUR",
        "total_amount": "10.50",
        "discount_amount": "0",
        "items_count": "2",
        "channel": "web",
        "updated_at": "",
    }
    fields.update(over)
    return ",".join(fields.values())


def event(mid: Any, **over: Any) -> str:
    body: dict[str, Any] = {
        "messageId": mid,
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a1",
        "userId": None,
        "timestamp": "2024-03-01T10:00:00Z",
        "context": {"device": {"type": "mobile"}},
        "properties": {"price": 12.5},
    }
    body.update(over)
    return json.dumps(body)


def write(landing: Path, rel: str, data: str | bytes) -> Path:
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def stray_quote_csv(landing: Path) -> tuple[str, int]:
    """40 physical lines; a stray quote on line 5 closes on line 25 (the issue's case)."""
    lines = [CRM_HEADER]
    for i in range(2, 41):
        if i == 5:
            lines.append(crm_row(f"c{i}", city='"Oakland'))
        elif i == 25:
            lines.append(crm_row(f"c{i}", city='Oakland"'))
        else:
            lines.append(crm_row(f"c{i}"))
    write(landing, "crm/stray_quote.csv", "\n".join(lines) + "\n")
    return "crm/stray_quote.csv", len(lines)


def unterminated_quote_csv(landing: Path) -> tuple[str, int]:
    """50 physical lines; row 2 opens a quote that never closes."""
    lines = [CRM_HEADER, crm_row("c2", first_name='"Ann')]
    lines += [crm_row(f"c{i}") for i in range(3, 51)]
    write(landing, "crm/unterminated.csv", "\n".join(lines) + "\n")
    return "crm/unterminated.csv", len(lines)


def non_utf8_name(landing: Path) -> bytes:
    folder = os.fsencode(landing / "crm")
    os.makedirs(folder, exist_ok=True)
    name = os.path.join(folder, b"contacts_\xff\xfe.csv")
    with open(name, "wb") as fh:
        fh.write((CRM_HEADER + "\n" + crm_row("c900") + "\n").encode())
    return name


def gzip_bomb(landing: Path, rel: str, decompressed: int) -> Path:
    """A small .gz that inflates to ``decompressed`` bytes of one repeated JSON line."""
    line = (event("bomb") + "\n").encode()
    block = line * max(1, (1 << 20) // len(line))
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        written = 0
        while written < decompressed:
            fh.write(block)
            written += len(block)
    return path
