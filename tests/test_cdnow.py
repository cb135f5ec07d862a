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


def test_prepare_splits_at_the_cutoff_and_moves_dates_by_whole_weeks(tmp_path: Path) -> None:
    out = tmp_path / "zone"
    summary = cdnow.prepare(_wheel(tmp_path), out, date(1997, 2, 28))
    run_date = date.fromisoformat(summary.run_date)
    shift = run_date - date(1997, 2, 28)
    assert shift.days % 7 == 0 and run_date.weekday() == date(1997, 2, 28).weekday()
    assert date(2026, 6, 24) <= run_date <= cdnow.ANCHOR  # inside the DAGs' schedule
    assert cdnow.run_date_of(out) == run_date
    assert (summary.contacts, summary.orders, summary.future_orders) == (3, 4, 3)

    def moved(y: int, m: int, d: int) -> str:
        return (date(y, m, d) + shift).isoformat()

    contacts = _rows(out / "landing" / "crm" / "cdnow_contacts.csv")
    # customer 00004 first buys after D: not known yet
    assert [c["contact_id"] for c in contacts] == ["00001", "00002", "00003"]
    assert contacts[1]["updated_at"] == f"{moved(1997, 1, 12)}T12:00:00Z"  # first purchase
    assert {c["marketing_consent"] for c in contacts} == {""}

    tx = out / "landing" / "transactions"
    orders = [o for f in sorted(tx.glob("orders_*.csv")) for o in _rows(f)]
    # monthly delivery files, by the moved order dates
    assert {f.name[7:14] for f in tx.glob("orders_*.csv")} == {
        moved(1997, 1, d)[:7] for d in (1, 12)} | {moved(1997, 2, 15)[:7]}
    # two lines of one customer on one day are two orders
    day = moved(1997, 1, 12).replace("-", "")
    assert [o["order_id"] for o in orders if o["contact_id"] == "00002"] == [
        f"CD-00002-{day}-1", f"CD-00002-{day}-2"]
    assert [(o["total_amount"], o["items_count"]) for o in orders][:3] == [
        ("11.77", "1"), ("12.00", "1"), ("77.00", "5")]
    assert {(o["status"], o["currency"]) for o in orders} == {("completed", "USD")}
    assert all(o["contact_id"] for o in orders)
    assert max(o["order_ts"][:10] for o in orders) <= summary.run_date
    # a zero-CD line still has items_count >= 1 (the contract's minimum)
    assert orders[3]["items_count"] == "1" and orders[3]["total_amount"] == "0.00"

    future = _rows(out / "future" / "transactions" / "orders_future.csv")
    assert [o["order_ts"][:10] for o in future] == [
        moved(1997, 3, 1), moved(1997, 4, 5), moved(1997, 3, 20)]
    assert (out / "landing" / "analytics").is_dir()


def test_prepare_refuses_a_foreign_file_and_an_existing_zone(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unexpected CDNOW header"):
        cdnow.prepare(_wheel(tmp_path, "id day cds value\n1 19970101 1 2.0\n"),
                      tmp_path / "a", date(1997, 3, 1))
    out = tmp_path / "b"
    cdnow.prepare(_wheel(tmp_path), out, date(1997, 3, 1))
    with pytest.raises(SystemExit, match="already holds a zone"):
        cdnow.prepare(_wheel(tmp_path), out, date(1997, 3, 1))
    with pytest.raises(SystemExit, match="must be a CDNOW date"):
        cdnow.prepare(_wheel(tmp_path), tmp_path / "c", date(2026, 3, 1))
