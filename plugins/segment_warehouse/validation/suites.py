"""Load and check the versioned expectation suites in ``expectations/``.

File format (one JSON file per layer, e.g. ``expectations/marts.json``)::

    {
      "suite": "marts",
      "layer": "marts",
      "title": "Marts (what analysts query)",
      "batches": [
        {
          "name": "customer_profiles",
          "title": "Customer profiles",
          "sql": "select customer_id, ... from marts.customer_profiles",
          "scope": "rows",                           # "table" or "rows" (required)
          "delta": {"loaded_at": "_loaded_at"},      # optional, rows only (default: digest)
          "pii": false,                              # optional
          "expectations": [
            {"type": "expect_column_values_to_be_unique",
             "kwargs": {"column": "customer_id"},
             "meta": {"severity": "critical",
                      "description": "Each customer appears once."}}
          ]
        }
      ]
    }

Why not plain GX ``ExpectationSuite`` JSON: a GX suite validates exactly one
batch and has nowhere to say *which* data it is about. GX has no DuckDB
dialect, so every batch here is a pandas DataFrame produced by a SQL query
(often an aggregate). Keeping that query next to its expectations makes each
file a self-contained, reviewable contract. The ``expectations`` entries are
GX's own ``ExpectationConfiguration`` shape (``type``/``kwargs``/``meta``), so
each batch turns 1:1 into a real ``gx.ExpectationSuite`` named
``<suite>.<batch>`` and anything GX can express can be used here.

Scope (issue #8's decision, carried out by #20): every batch says what it
covers. ``table`` batches run on the full tables every run; their SQL does the
work in DuckDB (uniqueness, reconciliation, row accounting, null counts,
referential integrity) and returns an aggregate, or a small metadata table
such as the load manifest, at most ``TABLE_SCOPE_MAX_ROWS`` rows. ``rows``
batches hold row-level rules only (one verdict per row, see
``ROW_LEVEL_TYPES``): a delta run checks the rows that are new or changed
since the last successful validation, a full run checks every row (in
chunks, never a sample). How a delta finds its rows: ``{"loaded_at": col}``
for append-only tables (rows whose load time is after the last validated
one), else a digest of every row the batch selects, compared with the
digests of the last successful validation (``validation/scope.py``).

Timestamp bounds and the currency list are not literals but GX suite
parameters (``{"$PARAMETER": "ts_max"}``) filled in at run time: "now" moves,
and the currency list must follow the FX seed rather than be copied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEVERITIES: frozenset[str] = frozenset({"critical", "warning"})
SCOPES: frozenset[str] = frozenset({"table", "rows"})
# A table-scope batch is an aggregate; more rows than this means it pulls a table.
TABLE_SCOPE_MAX_ROWS = 100_000

# Row-level ("map") expectations: a verdict per row, so they can run on any
# subset of rows and on chunks whose counts add up. Aggregates over a column
# (uniqueness, row counts, distinct counts, min/max) cannot, and belong to
# table-scope batches in SQL.
ROW_LEVEL_PREFIXES: tuple[str, ...] = (
    "expect_column_values_to_",
    "expect_column_value_lengths_to_",
    "expect_column_pair_values_",
)
NOT_ROW_LEVEL: frozenset[str] = frozenset({"expect_column_values_to_be_unique"})


def is_row_level(expectation_type: str) -> bool:
    return expectation_type.startswith(ROW_LEVEL_PREFIXES) and (
        expectation_type not in NOT_ROW_LEVEL
    )

# Layer names the DAGs use -> suite file stem. "raw" validates the ingest
# contract (manifest accounting, quarantine), hence the different name.
LAYER_SUITES: dict[str, str] = {
    "raw": "raw_contract",
    "raw_contract": "raw_contract",
    "staging": "staging",
    "marts": "marts",
    "segments": "segments",
    "predictions": "predictions",
    "personalisation": "personalisation",
    "experiments": "experiments",
}


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SuiteError(ValueError):
    """An expectation file is malformed (caught in tests, before any run)."""


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    kwargs: dict[str, Any]
    severity: str
    description: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        kw = self.kwargs
        if "column" in kw:
            return str(kw["column"])
        if "column_A" in kw and "column_B" in kw:
            return f"{kw['column_A']}, {kw['column_B']}"
        if "column_list" in kw:
            return ", ".join(map(str, kw["column_list"]))
        return None


@dataclass(frozen=True)
class BatchSpec:
    name: str
    title: str
    sql: str
    expectations: tuple[ExpectationSpec, ...]
    scope: str = "table"
    # rows batches: the column of an append-only load time ("loaded_at" delta);
    # None means a digest of each selected row decides what is new or changed.
    delta_loaded_at: str | None = None
    pii: bool = False
    # Severity recorded when the batch query itself fails (missing table or
    # column): by default that is as bad as a failed critical check.
    severity_if_unavailable: str = "critical"


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    layer: str
    title: str
    description: str
    batches: tuple[BatchSpec, ...]
    path: Path


def suite_name_for(layer: str) -> str:
    try:
        return LAYER_SUITES[layer]
    except KeyError as exc:
        raise SuiteError(
            f"unknown layer {layer!r}; expected one of {sorted(LAYER_SUITES)}"
        ) from exc


def _text(value: Any, where: str) -> str:
    # SQL may be written as a list of lines to keep the JSON readable.
    if isinstance(value, list):
        value = "\n".join(map(str, value))
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(f"{where}: expected a non-empty string")
    return value


def _expectation(raw: dict[str, Any], where: str) -> ExpectationSpec:
    if not isinstance(raw.get("type"), str) or not raw["type"].startswith("expect_"):
        raise SuiteError(f"{where}: 'type' must name a GX expectation")
    meta = dict(raw.get("meta") or {})
    severity = meta.get("severity")
    if severity not in SEVERITIES:
        raise SuiteError(f"{where}: meta.severity must be one of {sorted(SEVERITIES)}")
    description = _text(meta.get("description"), f"{where}.meta.description")
    kwargs = raw.get("kwargs")
    if not isinstance(kwargs, dict):
        raise SuiteError(f"{where}: 'kwargs' must be an object")
    return ExpectationSpec(
        type=raw["type"], kwargs=kwargs, severity=severity, description=description, meta=meta
    )


def load_suite(layer: str, expectations_dir: Path) -> SuiteSpec:
    """Read and check ``<expectations_dir>/<suite>.json`` for ``layer``."""
    name = suite_name_for(layer)
    path = expectations_dir / f"{name}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SuiteError(f"expectation suite file missing: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: invalid JSON: {exc}") from exc

    batches: list[BatchSpec] = []
    seen: set[str] = set()
    for i, raw_batch in enumerate(doc.get("batches") or []):
        where = f"{path.name}: batches[{i}]"
        bname = _text(raw_batch.get("name"), f"{where}.name")
        if bname in seen:
            raise SuiteError(f"{where}: duplicate batch name {bname!r}")
        seen.add(bname)
        exps = tuple(
            _expectation(e, f"{where}.expectations[{j}]")
            for j, e in enumerate(raw_batch.get("expectations") or [])
        )
        if not exps:
            raise SuiteError(f"{where}: no expectations")
        if "sample" in raw_batch:
            raise SuiteError(
                f"{where}: 'sample' is gone: row checks run on every new or changed row "
                "(scope 'rows') and aggregates on the full table (scope 'table')"
            )
        scope = raw_batch.get("scope")
        if scope not in SCOPES:
            raise SuiteError(f"{where}: 'scope' must be one of {sorted(SCOPES)}")
        delta = raw_batch.get("delta") or {}
        if delta and (scope != "rows" or set(delta) != {"loaded_at"}):
            raise SuiteError(f"{where}: 'delta' is {{\"loaded_at\": column}} on rows batches only")
        loaded_at = delta.get("loaded_at")
        if loaded_at is not None and not _IDENTIFIER.fullmatch(str(loaded_at)):
            raise SuiteError(f"{where}: delta.loaded_at must be a column name")
        if scope == "rows":
            for j, spec in enumerate(exps):
                if not is_row_level(spec.type):
                    raise SuiteError(
                        f"{where}.expectations[{j}]: {spec.type} is not a row-level rule; "
                        "put it in a table-scope batch (in SQL over the full table)"
                    )
                if "mostly" in spec.kwargs:
                    raise SuiteError(
                        f"{where}.expectations[{j}]: 'mostly' depends on which rows are "
                        "checked; a row rule holds for every row"
                    )
        unavailable = raw_batch.get("severity_if_unavailable", "critical")
        if unavailable not in SEVERITIES:
            raise SuiteError(f"{where}: severity_if_unavailable must be critical|warning")
        batches.append(
            BatchSpec(
                name=bname,
                title=str(raw_batch.get("title") or bname),
                sql=_text(raw_batch.get("sql"), f"{where}.sql"),
                expectations=exps,
                scope=scope,
                delta_loaded_at=loaded_at,
                pii=bool(raw_batch.get("pii", False)),
                severity_if_unavailable=unavailable,
            )
        )
    if not batches:
        raise SuiteError(f"{path}: no batches")
    return SuiteSpec(
        name=str(doc.get("suite") or name),
        layer=str(doc.get("layer") or layer),
        title=str(doc.get("title") or name),
        description=str(doc.get("description") or ""),
        batches=tuple(batches),
        path=path,
    )
