"""Row builders for landing-zone files, shared by the ingest and hostile-input tests.

Each builder returns one contract-valid row (DESIGN.md section 3) with every field
overridable by keyword; tests change only the field they are about.
"""

from __future__ import annotations

import json
from typing import Any

CRM_HEADER = (
    "contact_id,email,phone,first_name,last_name,birth_date,gender,country,city,"
    "postal_code,marketing_consent,created_at,updated_at"
)
TX_HEADER = (
    "order_id,contact_id,email,order_ts,status,currency,total_amount,discount_amount,"
    "items_count,channel,updated_at"
)


def crm_row(cid: str, updated: str = "2024-01-02T10:00:00Z", **over: str) -> str:
    """A CRM row; the email has surrounding spaces and mixed case, as real exports do."""
    fields = {
        "contact_id": cid,
        "email": f" {cid.upper()}@Example.com ",
        "phone": "(415) 555-0100",
        "first_name": "Ann",
        "last_name": "Lee",
        "birth_date": "1990-05-01",
        "gender": "F",
        "country": "US",
        "city": "",
        "postal_code": "94103",
        "marketing_consent": "yes",
        "created_at": "2024-01-01",
        "updated_at": updated,
    }
    fields.update(over)
    return ",".join(fields.values())


def tx_row(oid: str, **over: str) -> str:
    fields = {
        "order_id": oid,
        "contact_id": "c1",
        "email": "",
        "order_ts": "2024-02-01T12:00:00+01:00",
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
    """A track event as a JSON line; a field given as ``...`` is left out."""
    body: dict[str, Any] = {
        "messageId": mid,
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a1",
        "userId": None,
        "timestamp": "2024-03-01T10:00:00Z",
        "context": {"device": {"type": "mobile"}, "userAgent": "Mozilla"},
        "properties": {"price": 12.5},
    }
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not ...})
