"""Device classification after contact resolution (int_identity_components.py).

The dbt Python model is run directly on an in-memory DuckDB with a hand-made
edge list: a device is shared only when its logins / identify emails land in
more than one person after the backbone (contacts, emails, orders, matches)
is resolved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest

MODEL_FILE = (
    Path(__file__).resolve().parents[1]
    / "dbt_project/models/intermediate/identity/int_identity_components.py"
)


def _load_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("int_identity_components", MODEL_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeDbt:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def config(self, **_: Any) -> None:
        return None

    def ref(self, name: str) -> duckdb.DuckDBPyRelation:
        assert name == "int_identity_edges"
        return self._con.table("edges")


def _components(edges: list[tuple[str, str, str]]) -> dict[str, tuple[int, bool]]:
    con = duckdb.connect()
    con.execute("create table edges (src_node varchar, dst_node varchar, edge_type varchar)")
    con.executemany("insert into edges values (?, ?, ?)", edges)
    result = _load_model().model(_FakeDbt(con), con)
    return {node: (component, shared) for node, component, shared in result.fetchall()}


def _node(node: str) -> tuple[str, str, str]:
    return (node, node, "node")


@pytest.fixture(scope="module")
def resolved() -> dict[str, tuple[int, bool]]:
    return _components(
        [
            # one person with two CRM records, merged by a shared email
            _node("c:A1"), _node("c:A2"),
            ("c:A1", "e:ann@example.com", "contact_email"),
            ("c:A2", "e:ann@example.com", "contact_email"),
            # another person
            _node("c:B1"),
            # a guest order under an email no contact has
            _node("o:G1"), ("o:G1", "e:guest@example.com", "order_email"),
            # phone logged in as both of A's records: A's device
            ("a:phone", "c:A1", "device_login"), ("a:phone", "c:A2", "device_login"),
            # tablet logged in as A and as B: shared
            ("a:tablet", "c:A1", "device_login"), ("a:tablet", "c:B1", "device_login"),
            # laptop: B's login and the guest email -> the guest order joins B
            ("a:laptop", "c:B1", "device_login"),
            ("a:laptop", "e:guest@example.com", "device_identify"),
            # kiosk: two emails of nobody known -> shared
            ("a:kiosk", "e:x@example.com", "device_identify"),
            ("a:kiosk", "e:y@example.com", "device_identify"),
            # a contact id no CRM record has yet, plus A: two people
            ("a:pc", "c:A1", "device_login"), ("a:pc", "c:NEW", "device_login"),
        ]
    )


def test_two_records_of_one_person_keep_the_device(
    resolved: dict[str, tuple[int, bool]],
) -> None:
    component, shared = resolved["a:phone"]
    assert not shared
    assert component == resolved["c:A1"][0] == resolved["c:A2"][0]


def test_logins_of_two_people_make_a_shared_device_that_merges_nobody(
    resolved: dict[str, tuple[int, bool]],
) -> None:
    component, shared = resolved["a:tablet"]
    assert shared
    assert resolved["c:A1"][0] != resolved["c:B1"][0]
    assert component not in {resolved["c:A1"][0], resolved["c:B1"][0]}


def test_identify_email_of_a_guest_joins_the_one_person_of_the_device(
    resolved: dict[str, tuple[int, bool]],
) -> None:
    assert not resolved["a:laptop"][1]
    assert resolved["o:G1"][0] == resolved["c:B1"][0] == resolved["a:laptop"][0]


def test_two_unknown_emails_and_an_unknown_contact_are_separate_people(
    resolved: dict[str, tuple[int, bool]],
) -> None:
    assert resolved["a:kiosk"][1]
    assert resolved["a:pc"][1]
    assert resolved["c:NEW"][0] != resolved["c:A1"][0]


def test_only_anonymous_ids_can_be_shared(resolved: dict[str, tuple[int, bool]]) -> None:
    assert not any(shared for node, (_, shared) in resolved.items() if not node.startswith("a:"))
