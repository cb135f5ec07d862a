"""recluster(): marts.customer_features -> segments.* (+ model file + HTML report)."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from segment_warehouse.clustering import model as mdl
from segment_warehouse.clustering import store
from segment_warehouse.clustering.features import (
    ALGORITHM_VERSION,
    FEATURE_NAMES,
    feature_records,
    input_fingerprint,
    load_customer_features,
)
from segment_warehouse.clustering.naming import SegmentProfile, name_segments, profile_segments
from segment_warehouse.clustering.scoring import ClusterScorer, assign_labels
from segment_warehouse.clustering.space import NO_ACTIVITY_SEGMENT, model_space
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.warehouse import connect, ensure_schemas

log = logging.getLogger(__name__)

PROJECTION_SAMPLE = 4_000  # rows kept in the model file for the report's 2-D plot


@dataclass(frozen=True)
class ReclusterResult:
    """What the Airflow task returns (XCom): the run that is now current."""

    # None only when skipped on a warehouse without any previous run.
    run_id: str | None
    created: bool  # False: inputs unchanged or skipped; the existing latest run was returned
    as_of_date: str | None
    algorithm: str | None
    k: int | None
    silhouette: float | None
    inertia: float | None
    n_profiled: int
    n_excluded: int
    ari_vs_previous: float | None
    changed_share: float | None
    input_fingerprint: str | None
    model_path: str | None
    report_path: str | None
    duration_seconds: float
    # Set when there was nothing to cluster (see clustering.model.NotEnoughToCluster):
    # what is missing. Nothing was written; publishing segments can be skipped.
    skipped_reason: str | None = None


def _skipped(
    con: Any, prev: Any, reason: str, *, n: int, n_excluded: int, report: Path, t0: float
) -> ReclusterResult:
    log.warning("reclustering skipped, previous segments kept: %s", reason)
    if prev is not None:
        result = _result(store.run_row(con, prev.run_id), created=False, report=report, t0=t0)
        return replace(result, skipped_reason=reason)
    return ReclusterResult(
        run_id=None, created=False, as_of_date=None, algorithm=None, k=None, silhouette=None,
        inertia=None, n_profiled=n, n_excluded=n_excluded, ari_vs_previous=None,
        changed_share=None, input_fingerprint=None, model_path=None, report_path=None,
        duration_seconds=round(time.perf_counter() - t0, 3), skipped_reason=reason,
    )  # fmt: skip


def _nothing_to_cluster(space: Any) -> str | None:
    """What is missing when the active customers cannot form two segments, else None."""
    prep = space.prep
    active_t = prep.transformed[space.active]
    distinct = len(np.unique(active_t, axis=0)) if len(active_t) else 0
    if distinct >= mdl.MIN_DISTINCT:
        return None
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    raw = prep.transformed
    buyers = int((raw[:, col["frequency"]] > 0).sum()) if len(raw) else 0
    active = int((raw[:, col["sessions_90d"]] > 0).sum()) if len(raw) else 0
    return (
        f"nothing to cluster yet: {len(raw)} profiled customers ({prep.n_excluded} excluded: "
        f"no consent), {int(space.active.sum())} with any activity, have {distinct} distinct "
        f"feature vector(s), {mdl.MIN_DISTINCT} are needed for 2 segments; {buyers} have "
        f"orders and {active} have sessions in the last 90 days. Load order (transactions/) "
        "and event (analytics/) files, then recluster."
    )


def _result(
    row: dict[str, Any], *, created: bool, report: Path | None, t0: float
) -> ReclusterResult:
    return ReclusterResult(
        run_id=row["run_id"],
        created=created,
        as_of_date=str(row["as_of_date"]),
        algorithm=row["algorithm"],
        k=int(row["k"]),
        silhouette=row["silhouette"],
        inertia=row["inertia"],
        n_profiled=int(row["n_profiled"]),
        n_excluded=int(row["n_excluded"]),
        ari_vs_previous=row["ari_vs_previous"],
        changed_share=row["changed_share"],
        input_fingerprint=row["input_fingerprint"],
        model_path=row["model_path"],
        report_path=str(report) if report else None,
        duration_seconds=round(time.perf_counter() - t0, 3),
    )


def _safe_name(run_id: str) -> str:
    # Airflow run ids contain ':' and '+', which are awkward in file names.
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def _unique_run_id(con: Any, run_id: str) -> str:
    candidate, n = run_id, 2
    while store.run_exists(con, candidate):
        # Same Airflow run retried after the inputs changed: keep both runs.
        candidate, n = f"{run_id}.{n}", n + 1
    return candidate


def _save_model(path: Path, bundle: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".joblib.tmp")
    joblib.dump(bundle, tmp, compress=3)
    os.replace(tmp, path)  # never leave a half-written model behind


def recluster(
    *,
    run_id: str | None = None,
    as_of: str | None = None,
    settings: Settings | None = None,
    force: bool = False,
) -> ReclusterResult:
    """Recluster profiled customers and write segments.* in one transaction.

    Idempotent: when the input fingerprint equals the latest run's and
    ``force`` is false, nothing is written and the latest run is returned
    (its report is regenerated only if the file is missing).
    """
    from segment_warehouse import segment_report  # matplotlib: import only when needed

    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    mark = t0

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[stage] = round(now - mark, 2)
        mark = now

    settings = settings or get_settings()
    as_of_date = date.fromisoformat(as_of[:10]) if as_of else datetime.now(UTC).date()
    params = {
        "k_min": settings.recluster_k_min,
        "k_max": settings.recluster_k_max,
        "minibatch_threshold": settings.minibatch_threshold,
        "seed": mdl.SEED,
    }
    con = connect(settings=settings)
    try:
        ensure_schemas(con)
        store.ensure_segment_tables(con)
        df = load_customer_features(con)
        fingerprint = input_fingerprint(df, params)
        lap("load+fingerprint")
        prev = store.latest_run(con)
        if prev is not None and prev.input_fingerprint == fingerprint and not force:
            log.info(
                "inputs unchanged (fingerprint %s): keeping run %s", fingerprint[:12], prev.run_id
            )
            row = store.run_row(con, prev.run_id)
            report = segment_report.report_path(settings, prev.run_id)
            if not report.exists():
                segment_report.write_report(con, prev.run_id, settings=settings)
            return _result(
                row, created=False, report=settings.segment_reports_dir / "index.html", t0=t0
            )

        space = model_space(df)
        prep = space.prep
        n = len(prep.customer_ids)
        log.info(
            "profiling %d customers (%d excluded: no consent; %d without activity)",
            n, prep.n_excluded, int((~space.active).sum()),
        )  # fmt: skip
        index = settings.segment_reports_dir / "index.html"
        reason = _nothing_to_cluster(space)
        if reason is not None or space.scaler is None:
            return _skipped(con, prev, reason or "no active customers", n=n,
                            n_excluded=prep.n_excluded, report=index, t0=t0)  # fmt: skip
        scaler, X = space.scaler, space.X
        active_ids = prep.customer_ids[space.active]
        features = feature_records(scaler)
        lap("prepare+scale")

        sample_idx = mdl.stable_sample(active_ids, mdl.SELECTION_SAMPLE)
        prev_centroids = store.previous_centroids_in_new_space(prev, features) if prev else {}
        prev_init = (
            np.vstack([prev_centroids[s] for s in sorted(prev_centroids)])
            if prev_centroids
            else None
        )
        try:
            k, candidates = mdl.select_k(
                X[sample_idx],
                active_ids[sample_idx],
                settings.recluster_k_min,
                settings.recluster_k_max,
                prev.k if prev else None,
                prev_init,
            )
        except mdl.NotEnoughToCluster as exc:  # the sample can be flatter than the whole
            return _skipped(con, prev, f"nothing to cluster yet: {exc}", n=n,
                            n_excluded=prep.n_excluded, report=index, t0=t0)  # fmt: skip
        init = prev_init if prev_init is not None and len(prev_init) == k else None
        lap("select_k")
        assert prep.imputation is not None  # set by prepare_features

        def assign(model: Any) -> np.ndarray:
            # The scoring step, on the configured engine (in Spark for
            # SEGMENTS_ENGINE=spark): every profiled customer, the fitted
            # imputation, scaler and model; inactive customers get label k.
            labels = assign_labels(ClusterScorer(prep.imputation, scaler, model, k), df, prep,
                                   settings)  # fmt: skip
            if (labels[~space.active] != k).any() or (labels[space.active] >= k).any():
                raise RuntimeError("scoring disagrees with the fit on who is active")
            return labels[space.active]

        fit = mdl.fit_clusters(
            X,
            k,
            customer_ids=active_ids,
            minibatch_threshold=settings.minibatch_threshold,
            init=init,
            assign=assign,
        )
        df = df.iloc[0:0]  # scored: free the frame (it was kept for the DuckDB engine's scoring)
        lap("fit+score")
        sizes = np.bincount(fit.labels, minlength=k)
        label_to_id = mdl.match_segment_ids(
            fit.centroids, sizes, prev_centroids, max(prev.max_segment_id if prev else 0, 0) + 1
        )
        # Inactive customers are label k of the profile, with the fixed id and name.
        all_labels = np.full(n, k, dtype=np.int64)
        all_labels[space.active] = fit.labels
        inactive = int((~space.active).sum())
        profiles = profile_segments(
            prep, all_labels, {**label_to_id, k: NO_ACTIVITY_SEGMENT["segment_id"]}
        )
        idle = [p for p in profiles if p.segment_id == NO_ACTIVITY_SEGMENT["segment_id"]]
        profiles = [p for p in profiles if p.segment_id != NO_ACTIVITY_SEGMENT["segment_id"]]
        name_segments(profiles)
        if inactive:
            idle[0].name = NO_ACTIVITY_SEGMENT["name"]
            idle[0].traits = NO_ACTIVITY_SEGMENT["traits"]
            profiles = [*idle, *profiles]
        id_of_label = np.array(
            [label_to_id[i] for i in range(k)] + [NO_ACTIVITY_SEGMENT["segment_id"]],
            dtype=np.int64,
        )
        segment_ids = id_of_label[all_labels]
        name_of_id = {p.segment_id: p.name for p in profiles}

        # Same rows as the k selection, so the recorded figure is comparable.
        sil_idx = sample_idx[mdl.stable_sample(active_ids[sample_idx], mdl.SILHOUETTE_SAMPLE)]
        silhouette = mdl.silhouette(X[sil_idx], fit.labels[sil_idx])

        assignments = pd.DataFrame(
            {
                "customer_id": pd.Series(prep.customer_ids, dtype="string"),
                "segment_id": segment_ids,
                "segment_name": pd.Series([name_of_id[s] for s in segment_ids], dtype="string"),
            }
        )
        ari, changed = None, None
        if prev is not None:
            old = store.previous_assignments(con)
            both = assignments.merge(old, on="customer_id", suffixes=("", "_prev"))
            if len(both):
                ari = float(adjusted_rand_score(both["segment_id_prev"], both["segment_id"]))
                changed = float((both["segment_id_prev"] != both["segment_id"]).mean())

        created_at = datetime.now(UTC)
        if prev is not None and created_at <= prev.created_at:
            # valid_from/valid_to must strictly increase from run to run.
            created_at = prev.created_at + timedelta(microseconds=1)
        if run_id is None:
            run_id = f"seg_{created_at:%Y%m%dT%H%M%SZ}_{fingerprint[:8]}"
        run_id = _unique_run_id(con, run_id)
        model_path = settings.models_dir / f"{_safe_name(run_id)}.joblib"

        proj_idx = sample_idx[:PROJECTION_SAMPLE] if len(sample_idx) else sample_idx
        active_segment_ids = segment_ids[space.active]
        _save_model(
            model_path,
            {
                "run_id": run_id,
                "algorithm_version": ALGORITHM_VERSION,
                "features": features,
                "scaler": scaler,
                "model": fit.model,
                "label_to_segment_id": label_to_id,
                "segments": [_profile_dict(p) for p in profiles],
                "projection_sample": {
                    "X": X[proj_idx].astype(np.float32),
                    "segment_id": active_segment_ids[proj_idx],
                },
                "warm_started": fit.warm_started,
                "no_activity": {**NO_ACTIVITY_SEGMENT, "size": inactive},
            },
        )
        run = {
            "run_id": run_id,
            "created_at": created_at,
            "as_of_date": as_of_date,
            "algorithm": fit.algorithm,
            "k": k,
            "silhouette": silhouette,
            "inertia": fit.inertia,
            "n_profiled": n,
            "n_excluded": prep.n_excluded,
            "ari_vs_previous": ari,
            "changed_share": changed,
            "features": features,
            "k_candidates": candidates,
            "input_fingerprint": fingerprint,
            "model_path": str(model_path),
        }
        summary = pd.DataFrame(
            [
                {
                    "segment_id": p.segment_id,
                    "segment_name": p.name,
                    "size": p.size,
                    "share": p.share,
                    **{f"mean_{f}": p.means[f] for f in FEATURE_NAMES},
                    "traits": p.traits,
                }
                for p in profiles
            ]
        )
        centroids = pd.DataFrame(
            [
                {
                    "segment_id": label_to_id[label],
                    "feature": f,
                    "value": float(fit.centroids[label, j]),
                }
                for label in range(k)
                for j, f in enumerate(FEATURE_NAMES)
            ]
        )
        lap("profile+compare+save_model")
        try:
            store.write_run(
                con, run=run, assignments=assignments, summary=summary, centroids=centroids
            )
        except BaseException:
            model_path.unlink(missing_ok=True)  # no run row points at it
            raise
        lap("write_tables")
        log.info(
            "run %s: %s k=%d silhouette=%s ari=%s changed=%s in %.1fs",
            run_id,
            fit.algorithm,
            k,
            silhouette,
            ari,
            changed,
            time.perf_counter() - t0,
        )
        report = segment_report.write_report(con, run_id, settings=settings)
        lap("report")
        log.info("stage timings (s): %s", stages)
        return _result(store.run_row(con, run_id), created=True, report=report, t0=t0)
    finally:
        con.close()


def _profile_dict(p: SegmentProfile) -> dict[str, Any]:
    return {
        "segment_id": p.segment_id,
        "segment_name": p.name,
        "size": p.size,
        "share": p.share,
        "buyer_share": p.buyer_share,
        "z": p.z,
        "means": p.means,
        "traits": p.traits,
    }
