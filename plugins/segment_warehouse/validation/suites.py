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
          "sample": {"key": "customer_id"},          # optional
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

Timestamp bounds and the currency list are not literals but GX suite
parameters (``{"$PARAMETER": "ts_max"}``) filled in at run time: "now" moves,
and the currency list must follow the FX seed rather than be copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEVERITIES: frozenset[str] = frozenset({"critical", "warning"})

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
    sample_key: str | None = None
    sample_rows: int | None = None
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
        sample = raw_batch.get("sample") or {}
        unavailable = raw_batch.get("severity_if_unavailable", "critical")
        if unavailable not in SEVERITIES:
            raise SuiteError(f"{where}: severity_if_unavailable must be critical|warning")
        batches.append(
            BatchSpec(
                name=bname,
                title=str(raw_batch.get("title") or bname),
                sql=_text(raw_batch.get("sql"), f"{where}.sql"),
                expectations=exps,
                sample_key=sample.get("key"),
                sample_rows=sample.get("max_rows"),
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
