"""Which task failures a retry cannot fix, and failing those without retrying.

The DAGs retry tasks twice with backoff for transient trouble: a DuckDB file
lock held by another process, a worker killed from outside. A failure that
depends only on the inputs (a failed dbt test or model, a compile error,
DuckDB running out of its memory limit, a failed validation, bad config) ends
the same way on every attempt; retrying only delays the report and repeats
the error. :func:`fail_fast` turns those into Airflow's
``AirflowFailException`` (task failed, retries skipped), with the reason in
the message, so the failure is reported once.

    @failures.fail_fast
    def dbt_build(...): ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# The project's own errors that only the inputs decide (matched by class name, so
# this module imports none of the heavy modules that define them).
_DETERMINISTIC_ERRORS: dict[str, str] = {
    "ConfigError": "configuration error",
    "PiiKeyMismatch": "configuration error",
    "ValidationFailed": "validation failed",
    "SuiteError": "invalid expectation suite",
    "PublishError": "publish refused",
    "FeatureInputError": "clustering input is invalid",
    "RulesError": "invalid content rules",
    "ExportError": "audience export failed",
    "ExperimentDataError": "experiment data is invalid",
}
# DuckDB errors of the SQL or the data, the same on every attempt.
_DUCKDB_DETERMINISTIC: dict[str, str] = {
    "OutOfMemoryException": "DuckDB ran out of memory (raise SEGMENTS_DUCKDB_MEMORY_LIMIT)",
    "BinderException": "SQL error",
    "CatalogException": "SQL error (missing table or column)",
    "ParserException": "SQL error",
    "ConversionException": "data conversion error",
    "ConstraintException": "constraint violated",
    "InvalidInputException": "invalid input",
}
# How DuckDB words an out-of-memory error, e.g. in a dbt node's message.
_OOM_TEXT = ("out of memory error", "outofmemoryexception")
# A DuckDB file held by another process: transient, worth a retry.
_LOCK_TEXT = ("could not set lock on file", "conflicting lock is held")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _dbt_reason(exc: BaseException) -> str | None:
    """DbtBuildError: deterministic unless a lock conflict or a killed dbt process."""
    text = str(exc).lower()
    result = getattr(exc, "result", None)
    node_text = " ".join(
        (n.message or "") for n in getattr(result, "nodes", []) if getattr(n, "failed", False)
    ).lower()
    if any(t in text or t in node_text for t in _LOCK_TEXT):
        return None
    if any(t in text or t in node_text for t in _OOM_TEXT):
        return _DUCKDB_DETERMINISTIC["OutOfMemoryException"]
    if result is not None and getattr(result, "returncode", 1) < 0:
        return None  # dbt killed by a signal (OOM killer, shutdown): may pass next time
    failed = getattr(exc, "failures", None) or []
    if failed:
        return f"dbt: {len(failed)} failed node(s)"
    return "dbt failed before running nodes (parse or compile error)"


def deterministic_reason(exc: BaseException) -> str | None:
    """Why ``exc`` will recur on a retry, or None when a retry may succeed."""
    for link in _chain(exc):
        names = [cls.__name__ for cls in type(link).__mro__]
        if "DbtBuildError" in names:
            return _dbt_reason(link)
        if any(t in str(link).lower() for t in _LOCK_TEXT):
            return None
        module = type(link).__module__ or ""
        if module.split(".")[0] in {"duckdb", "_duckdb"}:
            for name in names:
                if name in _DUCKDB_DETERMINISTIC:
                    return _DUCKDB_DETERMINISTIC[name]
        for name in names:
            if name in _DETERMINISTIC_ERRORS:
                return _DETERMINISTIC_ERRORS[name]
    return None


@contextmanager
def failing_fast(stage: str) -> Iterator[None]:
    """Re-raise a deterministic failure as ``AirflowFailException`` (no retry)."""
    try:
        yield
    except Exception as exc:
        from airflow.sdk.exceptions import AirflowFailException

        if isinstance(exc, AirflowFailException):
            raise
        reason = deterministic_reason(exc)
        if reason is None:
            raise
        raise AirflowFailException(f"{stage}: {reason}; not retried.\n{exc}") from exc


def fail_fast(func: F) -> F:
    """Decorator form of :func:`failing_fast` for task callables."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with failing_fast(func.__name__):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
