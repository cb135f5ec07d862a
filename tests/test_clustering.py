"""Reclustering: k selection, stable ids, consent exclusion, naming, history, personas.

End-to-end tests run ``recluster`` against a temp warehouse holding a synthetic
``marts.customer_features`` (same columns as the dbt mart) with planted personas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from segment_tools.synthetic_features import make_customer_features, write_customer_features
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from segment_warehouse.clustering import recluster
from segment_warehouse.clustering.features import FEATURE_NAMES, fit_scaler, prepare_features
from segment_warehouse.clustering.model import match_segment_ids, select_k, stable_sample
from segment_warehouse.clustering.naming import SegmentProfile, name_segments
from segment_warehouse.clustering.space import NO_ACTIVITY_SEGMENT, model_space
from segment_warehouse.config import get_settings
from segment_warehouse.warehouse import connect

N = 4_000  # small enough for a fast KMeans path, big enough for stable personas


def _env(mp: pytest.MonkeyPatch, root: Path) -> None:
    for name, sub in (("SEGMENTS_WAREHOUSE_DIR", "wh"), ("SEGMENTS_REPORTS_DIR", "rep")):
        mp.setenv(name, str(root / sub))
    mp.setenv("SEGMENTS_K_MIN", "4")
    mp.setenv("SEGMENTS_K_MAX", "9")


def _write(df: pd.DataFrame) -> None:
    con = connect()
    try:
        write_customer_features(con, df)
    finally:
        con.close()


def _query(sql: str) -> pd.DataFrame:
    con = connect(read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _tables() -> dict[str, pd.DataFrame]:
    return {
        "runs": _query("select * from segments.segment_runs order by created_at"),
        "current": _query("select * from segments.customer_segments order by customer_id"),
        "history": _query(
            "select * from segments.segment_membership_history order by customer_id, valid_from"
        ),
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run 1 on persona data, an unchanged rerun, then run 2 after a small data change."""
    root = tmp_path_factory.mktemp("recluster")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, root)
        df1 = make_customer_features(N, seed=11)
        _write(df1)
        r1 = recluster(as_of="2026-01-05")
        after1 = _tables()
        r1_again = recluster(as_of="2026-01-06")
        after_noop = _tables()

        # Small change: 40 new customers, 20 withdraw consent, and 10 lapsed
        # customers come back as high-value buyers (their segment must change).
        newcomers = make_customer_features(40, seed=12, id_offset=N)
        df2 = pd.concat([df1, newcomers], ignore_index=True)
        withdrawn = df1.index[df1["marketing_consent"].fillna(True).to_numpy(bool)][:20]
        df2.loc[withdrawn, "marketing_consent"] = False
        profiled = df1["marketing_consent"].fillna(True).to_numpy(bool)
        lapsed = df1.index[(df1["persona"] == "lapsed").to_numpy() & profiled][20:30]
        loyal = df1.index[(df1["persona"] == "high_value_loyal").to_numpy() & profiled][:10]
        df2.loc[lapsed, list(FEATURE_NAMES)] = df1.loc[loyal, list(FEATURE_NAMES)].to_numpy()
        _write(df2)
        r2 = recluster(as_of="2026-01-12")
        yield {
            "settings": get_settings(),
            "df1": df1,
            "r1": r1,
            "after1": after1,
            "r1_again": r1_again,
            "after_noop": after_noop,
            "r2": r2,
            "after2": _tables(),
            "withdrawn": set(df1.loc[withdrawn, "customer_id"]),
            "returned": set(df1.loc[lapsed, "customer_id"]),
            "newcomers_excluded": int(newcomers["marketing_consent"].eq(False).sum()),
        }


# --- k selection, matching, naming, preparation (unit level) ---------------------------


def test_select_k_picks_planted_k_on_separated_blobs() -> None:
    X, _ = make_blobs(n_samples=3_000, centers=6, n_features=13, cluster_std=0.6, random_state=3)
    ids = np.array([f"c{i:05d}" for i in range(len(X))], dtype=object)
    k, candidates = select_k(X, ids, 4, 10, prev_k=None)
    assert k == 6
    assert [c["k"] for c in candidates] == list(range(4, 11))
    assert sum(c["chosen"] for c in candidates) == 1
    assert all(c["inertia"] > 0 for c in candidates)
    # A clearly worse previous k is not kept just for stability.
    assert select_k(X, ids, 4, 10, prev_k=4)[0] == 6


def test_select_k_picks_the_planted_personas_on_synthetic_features() -> None:
    """Seven planted personas with mixed counts and shares: the consensus rule picks 7,
    and records every criterion and a split-half stability per candidate."""
    df = make_customer_features(3_000, seed=21, consent_false_share=0.0)
    space = model_space(df.drop(columns=["persona"]))
    ids = space.prep.customer_ids[space.active]
    idx = stable_sample(ids, 10_000)
    k, candidates = select_k(space.X[idx], ids[idx], 4, 9, prev_k=None)
    assert k == 7
    for c in candidates:
        assert {"silhouette", "calinski_harabasz", "davies_bouldin", "score", "stability"} <= set(c)
        assert 0.0 <= c["score"] <= 1.0
    best = max(candidates, key=lambda c: c["score"])
    assert best["k"] == 7 and best["score"] == 1.0
    assert next(c for c in candidates if c["k"] == 7)["stability"] > 0.9


def test_hungarian_matching_keeps_ids_and_gives_new_cluster_a_new_id() -> None:
    a, b = np.zeros(13), np.full(13, 4.0)
    far = np.full(13, -6.0)
    new = np.vstack([b + 0.05, a - 0.05, far])
    mapping = match_segment_ids(new, np.array([10, 20, 5]), {3: a, 7: b}, next_id=8)
    assert mapping == {0: 7, 1: 3, 2: 8}


def _profile(sid: int, buyer_share: float = 1.0, **z: float) -> SegmentProfile:
    zs = dict.fromkeys(FEATURE_NAMES, 0.0) | z
    means = dict.fromkeys(FEATURE_NAMES, 0.0)
    return SegmentProfile(sid - 1, sid, 100, 0.1, buyer_share, zs, means)


def test_names_are_unique_deterministic_and_follow_profiles() -> None:
    def build() -> list[SegmentProfile]:
        return [
            _profile(1, recency_days=1.8, sessions_30d=-1.5),
            _profile(2, recency_days=1.5, sessions_30d=-1.2, mobile_share=1.1),
            _profile(3, recency_days=1.2, sessions_30d=-1.0),
            _profile(4, buyer_share=0.0, sessions_90d=0.8, cart_adds_without_purchase=1.4),
            _profile(5, frequency=1.9, monetary=2.0),
            _profile(6, discount_share=1.7),
            _profile(7),
            _profile(8, mobile_share=1.6, sessions_30d=0.8, page_views_30d=0.8),
            # Slightly less engaged than 8: "highly engaged" would mislead, so a counter.
            _profile(9, mobile_share=1.5, sessions_30d=0.7, page_views_30d=0.7),
        ]

    profiles = build()
    name_segments(profiles)
    names = {p.segment_id: p.name for p in profiles}
    assert len(set(names.values())) == len(names)
    assert names[1] == "Lapsed"
    assert names[2] == "Lapsed (mobile-first)"
    assert names[3] == "Lapsed (2)"
    assert names[4] == "Browsers, no purchase"
    assert names[5] == "High-value loyal"
    assert names[6] == "Discount-driven"
    assert names[7] == "Occasional"
    assert names[8] == "Mobile-first"
    assert names[9] == "Mobile-first (2)"
    again = build()
    name_segments(again)
    assert {p.segment_id: p.name for p in again} == names
    assert "discount share +1.7σ vs buyers" in profiles[5].traits


def test_prepare_features_imputes_and_excludes_only_explicit_false() -> None:
    df = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "marketing_consent": pd.array([True, None, False, True], dtype="boolean"),
            **{f: [1.0, 1.0, 1.0, 1.0] for f in FEATURE_NAMES},
        }
    )
    df.loc[1, ["recency_days", "avg_order_value", "frequency"]] = np.nan  # never ordered
    df.loc[1, "tenure_days"] = 30.0
    df.loc[3, "recency_days"] = 500.0
    df.loc[3, "discount_share"] = 7.0  # out of range upstream: clipped to 1
    prep = prepare_features(df)
    assert list(prep.customer_ids) == ["a", "b", "d"]
    assert prep.n_excluded == 1
    col = {f: j for j, f in enumerate(FEATURE_NAMES)}
    b = prep.transformed[1]
    assert b[col["recency_days"]] == pytest.approx(np.log1p(500.0))  # >= longest observed
    # No order value: the buyers' median (both buyers have 1.0), not a fake 0.
    assert b[col["avg_order_value"]] == pytest.approx(np.log1p(1.0))
    assert prep.raw[2, col["discount_share"]] == 1.0
    # One order is thin evidence: the share is smoothed, 1 * 1.0 / (1 + 1).
    assert prep.transformed[2, col["discount_share"]] == pytest.approx(0.5)
    assert list(prep.buyer) == [True, False, True]


def test_share_scale_neither_explodes_nor_squashes() -> None:
    rng = np.random.default_rng(0)
    T = rng.normal(size=(1_000, len(FEATURE_NAMES)))
    col = {f: j for j, f in enumerate(FEATURE_NAMES)}
    # Zero-inflated share (IQR 0) and a 0/1 bimodal share (IQR 1).
    T[:, col["discount_share"]] = np.where(rng.random(1_000) < 0.85, 0.0, 0.4)
    T[:, col["mobile_share"]] = (rng.random(1_000) < 0.3).astype(float)
    scale = fit_scaler(T).scale_
    assert 0.1 <= scale[col["discount_share"]] <= 0.2
    assert 0.4 <= scale[col["mobile_share"]] <= 0.5


# --- end to end ---------------------------------------------------------------------


def test_planted_personas_recovered_and_named(two_runs: dict[str, Any]) -> None:
    df1, current = two_runs["df1"], two_runs["after1"]["current"]
    merged = df1.merge(current, on="customer_id")
    assert adjusted_rand_score(merged["persona"], merged["segment_id"]) >= 0.8
    majority = merged.groupby("persona")["segment_name"].agg(lambda s: s.value_counts().index[0])
    assert majority["high_value_loyal"] == "High-value loyal"
    assert majority["lapsed"] == "Lapsed"
    assert majority["discount_driven"] == "Discount-driven"
    assert majority["browsers_no_purchase"] == "Browsers, no purchase"
    assert majority["weekend_buyers"] == "Weekend buyers"
    assert majority["mobile_first"].startswith("Mobile-first")
    assert majority["new"].startswith("New")

    run = two_runs["after1"]["runs"].iloc[0]
    assert 4 <= run["k"] <= 9
    cands = json.loads(run["k_candidates"])
    assert [c["k"] for c in cands] == list(range(4, 10))
    assert next(c for c in cands if c["chosen"])["k"] == run["k"]
    assert [f["name"] for f in json.loads(run["features"])] == list(FEATURE_NAMES)
    assert run["ari_vs_previous"] is None or math.isnan(run["ari_vs_previous"])
    assert current["segment_name"].nunique() == current["segment_id"].nunique() == run["k"]


def test_consent_false_is_excluded_and_counted(two_runs: dict[str, Any]) -> None:
    df1, current = two_runs["df1"], two_runs["after1"]["current"]
    no_consent = set(df1.loc[df1["marketing_consent"].eq(False).fillna(False), "customer_id"])
    unknown = set(df1.loc[df1["marketing_consent"].isna(), "customer_id"])
    assert no_consent and unknown
    assert not no_consent & set(current["customer_id"])
    assert unknown <= set(current["customer_id"])  # null consent = unknown = profiled
    run = two_runs["after1"]["runs"].iloc[0]
    assert run["n_excluded"] == len(no_consent)
    assert run["n_profiled"] == len(current) == len(df1) - len(no_consent)


def test_unchanged_rerun_creates_no_run_and_changes_nothing(two_runs: dict[str, Any]) -> None:
    r1, again = two_runs["r1"], two_runs["r1_again"]
    assert r1.created and not again.created
    assert again.run_id == r1.run_id
    before, after = two_runs["after1"], two_runs["after_noop"]
    for name in ("runs", "current", "history"):
        pd.testing.assert_frame_equal(before[name], after[name])


def test_small_change_keeps_segment_ids_and_meaning(two_runs: dict[str, Any]) -> None:
    r2, runs = two_runs["r2"], two_runs["after2"]["runs"]
    assert r2.created and len(runs) == 2
    old = two_runs["after1"]["current"].set_index("customer_id")
    new = two_runs["after2"]["current"].set_index("customer_id")
    # Same ids carry the same names: the meaning survived the rerun.
    old_names = old.groupby("segment_id")["segment_name"].first()
    new_names = new.groupby("segment_id")["segment_name"].first()
    assert old_names.to_dict() == new_names.to_dict()
    untouched = old.index.difference(list(two_runs["withdrawn"] | two_runs["returned"]))
    same = (old.loc[untouched, "segment_id"] == new.loc[untouched, "segment_id"]).mean()
    assert same >= 0.99
    assert r2.ari_vs_previous is not None and r2.ari_vs_previous >= 0.95
    assert r2.changed_share is not None and r2.changed_share <= 0.02
    # The 10 returning customers joined the high-value segment.
    returned = new.loc[sorted(two_runs["returned"])]
    assert (returned["segment_name"] == "High-value loyal").mean() >= 0.9
    assert not two_runs["withdrawn"] & set(new.index)
    excluded_now = runs.iloc[0]["n_excluded"] + 20 + two_runs["newcomers_excluded"]
    assert runs.iloc[1]["n_excluded"] == excluded_now


def test_history_closes_rows_on_segment_change_and_consent_withdrawal(
    two_runs: dict[str, Any],
) -> None:
    history = two_runs["after2"]["history"]
    runs = two_runs["after2"]["runs"]
    t1, t2 = runs["created_at"].iloc[0], runs["created_at"].iloc[1]
    open_rows = history[history["valid_to"].isna()]
    assert open_rows["customer_id"].is_unique
    current = two_runs["after2"]["current"]
    pd.testing.assert_frame_equal(
        open_rows[["customer_id", "segment_id"]].reset_index(drop=True),
        current[["customer_id", "segment_id"]].reset_index(drop=True),
    )
    for cid in two_runs["returned"]:
        rows = history[history["customer_id"] == cid].sort_values("valid_from")
        if len(rows) == 1:  # already high-value before: nothing to close
            continue
        first, second = rows.iloc[0], rows.iloc[1]
        assert first["valid_from"] == t1 and first["valid_to"] == t2
        assert second["valid_from"] == t2 and pd.isna(second["valid_to"])
        assert first["segment_id"] != second["segment_id"]
        assert second["run_id"] == two_runs["r2"].run_id
    for cid in two_runs["withdrawn"]:
        rows = history[history["customer_id"] == cid]
        assert len(rows) == 1 and rows.iloc[0]["valid_to"] == t2


def test_model_and_report_written(two_runs: dict[str, Any]) -> None:
    settings, r2 = two_runs["settings"], two_runs["r2"]
    bundle = joblib.load(r2.model_path)
    assert Path(r2.model_path).parent == settings.models_dir
    assert {"scaler", "model", "features", "label_to_segment_id"} <= set(bundle)
    index = settings.segment_reports_dir / "index.html"
    html = index.read_text(encoding="utf-8")
    assert r2.run_id in html and html.count("data:image/png;base64,") >= 5  # incl. migration
    assert "excluded (no consent)" in html
    # every candidate k with its criteria, the chosen one marked
    assert "<h2>Choice of k</h2>" in html and "Calinski-Harabasz" in html
    assert html.count(">chosen</td>") == 1
    assert len(list((settings.segment_reports_dir / "runs").glob("*.html"))) == 2


def test_forced_rerun_on_same_data_reproduces_assignments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, tmp_path)
    _write(make_customer_features(1_500, seed=5))
    first = recluster(as_of="2026-02-02")
    before = _tables()["current"]
    forced = recluster(as_of="2026-02-02", force=True)
    after = _tables()
    assert forced.created and forced.run_id != first.run_id
    assert forced.ari_vs_previous == pytest.approx(1.0) and forced.changed_share == 0.0
    assert (before[["customer_id", "segment_id", "segment_name"]]).equals(
        after["current"][["customer_id", "segment_id", "segment_name"]]
    )
    assert after["history"]["valid_to"].isna().all()  # nobody moved: nothing closed


def test_customers_without_behaviour_skip_reclustering_and_keep_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contacts but no orders or sessions: every customer looks the same. A
    deterministic condition: said plainly, no exception to retry, segments kept."""
    _env(monkeypatch, tmp_path)
    df = make_customer_features(600, seed=5)
    _write(df)
    first = recluster(as_of="2026-01-05")
    before = _tables()

    flat = df.copy()
    for name in FEATURE_NAMES:
        flat[name] = 0.0
    flat["tenure_days"] = 30.0  # contacts created the same day, nothing since
    _write(flat)
    skipped = recluster(as_of="2026-01-12")
    assert skipped.created is False
    assert skipped.skipped_reason is not None
    assert "0 have orders" in skipped.skipped_reason
    assert "0 have sessions" in skipped.skipped_reason
    assert skipped.run_id == first.run_id  # the previous segments stay current
    after = _tables()
    for name in ("runs", "current", "history"):
        pd.testing.assert_frame_equal(after[name], before[name])


def test_nothing_to_cluster_on_a_fresh_warehouse_is_a_skip_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, tmp_path)
    flat = make_customer_features(50, seed=6)
    for name in FEATURE_NAMES:
        flat[name] = 0.0
    _write(flat)
    result = recluster(as_of="2026-01-05")
    assert result.created is False and result.run_id is None
    assert result.skipped_reason and "distinct" in result.skipped_reason
    assert _query("select count(*) n from segments.customer_segments")["n"].item() == 0


def test_customers_without_activity_get_the_fixed_segment_and_stay_out_of_kmeans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRM-only contacts (no order, no web activity) are one fixed segment, id 0, named
    "No activity yet"; k-means only sees active customers, so the planted personas are
    still found and the fixed segment has no centroid."""
    _env(monkeypatch, tmp_path)
    df = make_customer_features(1_500, seed=9, consent_false_share=0.0)
    idle = make_customer_features(120, seed=10, consent_false_share=0.0, id_offset=50_000)
    for name in FEATURE_NAMES:
        idle[name] = np.nan if name in ("recency_days", "avg_order_value") else 0.0
    idle["tenure_days"] = np.linspace(1.0, 900.0, len(idle))
    idle["persona"] = "no_activity"
    both = pd.concat([df, idle], ignore_index=True)
    for c in ("frequency", "sessions_30d", "sessions_90d", "page_views_30d", "page_views_90d",
              "cart_adds_without_purchase"):
        both[c] = both[c].astype("Int64")
    _write(both)
    result = recluster(as_of="2026-01-05")
    assert result.created
    seg = _query("select customer_id, segment_id, segment_name from segments.customer_segments")
    seg = seg.merge(both[["customer_id", "persona"]], on="customer_id")
    fixed = seg[seg.segment_id == NO_ACTIVITY_SEGMENT["segment_id"]]
    assert set(fixed.customer_id) == set(idle.customer_id)
    assert set(fixed.segment_name) == {NO_ACTIVITY_SEGMENT["name"]}
    active = seg[seg.persona != "no_activity"]
    assert adjusted_rand_score(active.persona, active.segment_id) > 0.8
    run = _query("select * from segments.segment_runs")
    assert int(run.k.item()) == 7  # k counts k-means clusters, the fixed one comes on top
    summary = _query("select segment_id, size from segments.segment_summary")
    assert int(summary.loc[summary.segment_id == 0, "size"].item()) == len(idle)
    assert int(summary["size"].sum()) == len(both)
    centroid_ids = _query("select distinct segment_id from segments.segment_centroids")
    assert 0 not in set(centroid_ids.segment_id)


def test_k_selection_section_lists_every_candidate_and_marks_the_chosen() -> None:
    from segment_warehouse.clustering.report_k import k_selection_section

    X, _ = make_blobs(n_samples=1_200, centers=5, n_features=6, cluster_std=0.5, random_state=4)
    ids = np.array([f"c{i:05d}" for i in range(len(X))], dtype=object)
    k, candidates = select_k(X, ids, 3, 7, prev_k=None)
    page = k_selection_section(candidates)
    assert k == 5
    assert page.count("<tr") == 1 + len(candidates)
    assert page.count("chosen</td>") == 1
    assert "Davies-Bouldin" in page and "split-half stability" in page
    # A run recorded before the consensus rule has silhouette only: no empty columns.
    old = k_selection_section([{"k": 4, "silhouette": 0.3, "inertia": 1.0, "chosen": True}])
    assert "Calinski" not in old and "0.300" in old
