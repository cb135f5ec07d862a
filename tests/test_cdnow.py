"""segment_tools.cdnow prepare: a tiny fake Lifetimes wheel through the landing-zone contract."""

from __future__ import annotations

import csv
import zipfile
from datetime import date
from pathlib import Path

import pytest
from segment_tools import cdnow

# The real file's layout: space-aligned columns, CRLF line ends.
FAKE = (
    " customer_id  date number_of_cds  dollar_value\r\n"
    " 00001 19970101  1   11.77\r\n"
    " 00002 19970112  1   12.00\r\n"
    " 00002 19970112  5   77.00\r\n"
    " 00002 19970301  2   20.76\r\n"
    " 00003 19970215  0    0.00\r\n"
    " 00003 19970405  3   35.50\r\n"
    " 00004 19970320  2   29.33\r\n"
)


def _wheel(tmp_path: Path, text: str = FAKE) -> Path:
    path = tmp_path / "Lifetimes-0.11.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(cdnow.MEMBER, text)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_prepare_splits_at_the_cutoff_in_the_moved_calendar(tmp_path: Path) -> None:
    out = tmp_path / "zone"
    # 1997-02-28 moved by 28 years
    summary = cdnow.prepare(_wheel(tmp_path), out, date(2025, 2, 28))
    assert summary.original_cutoff == "1997-02-28"
    assert (summary.contacts, summary.orders, summary.future_orders) == (3, 4, 3)

    contacts = _rows(out / "landing" / "crm" / "cdnow_contacts.csv")
    # customer 00004 first buys after D: not known yet
    assert [c["contact_id"] for c in contacts] == ["00001", "00002", "00003"]
    assert contacts[1]["updated_at"] == "2025-01-12T12:00:00Z"  # the first purchase
    assert {c["marketing_consent"] for c in contacts} == {""}

    jan = _rows(out / "landing" / "transactions" / "orders_2025-01.csv")
    feb = _rows(out / "landing" / "transactions" / "orders_2025-02.csv")
    assert not (out / "landing" / "transactions" / "orders_2025-03.csv").exists()
    # two lines of one customer on one day are two orders
    assert [o["order_id"] for o in jan] == [
        "CD-00001-20250101-1", "CD-00002-20250112-1", "CD-00002-20250112-2"]
    assert jan[2]["total_amount"] == "77.00" and jan[2]["items_count"] == "5"
    assert {(o["status"], o["currency"]) for o in jan + feb} == {("completed", "USD")}
    assert all(o["contact_id"] for o in jan + feb)
    # a zero-CD line still has items_count >= 1 (the contract's minimum)
    assert feb[0]["items_count"] == "1" and feb[0]["total_amount"] == "0.00"

    future = _rows(out / "future" / "transactions" / "orders_future.csv")
    assert [o["order_ts"][:10] for o in future] == ["2025-03-01", "2025-04-05", "2025-03-20"]
    assert (out / "landing" / "analytics").is_dir()


def test_weekday_is_kept_by_the_shift() -> None:
    d = date(1997, 1, 1)
    assert (d + cdnow.SHIFT).isoformat() == "2025-01-01"
    assert (d + cdnow.SHIFT).weekday() == d.weekday()


def test_prepare_refuses_a_foreign_file_and_an_existing_zone(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unexpected CDNOW header"):
        cdnow.prepare(_wheel(tmp_path, "id day cds value\n1 19970101 1 2.0\n"),
                      tmp_path / "a", date(2025, 3, 1))
    out = tmp_path / "b"
    cdnow.prepare(_wheel(tmp_path), out, date(2025, 3, 1))
    with pytest.raises(SystemExit, match="already holds a zone"):
        cdnow.prepare(_wheel(tmp_path), out, date(2025, 3, 1))
