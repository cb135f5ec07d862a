"""Segment profiles (z-scores vs the population) and deterministic, unique names.

z-scores are computed in the "unscaled" model space (after imputation and
log1p, before RobustScaler): log space keeps one whale from making a whole
segment look high-value. Purchase features (recency, orders, revenue, AOV,
discount) are profiled against *buyers* only, using the segment's buyers:
otherwise the imputed values of never-ordered customers would swamp them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segment_warehouse.clustering.features import FEATURES, PreparedFeatures

TRAIT_Z = 0.5  # |z| above which a feature counts as distinguishing
BUYER_SEGMENT = 0.5  # a segment is a "buyer" segment if at least half have ordered


@dataclass
class SegmentProfile:
    label: int  # model cluster label
    segment_id: int
    size: int
    share: float
    buyer_share: float
    z: dict[str, float]  # NaN when the segment has no buyers for a purchase feature
    means: dict[str, float]  # raw means, nulls ignored (like SQL avg)
    name: str = ""
    traits: str = ""
    candidates: list[tuple[float, str]] = field(default_factory=list)


def profile_segments(
    prep: PreparedFeatures, labels: np.ndarray, label_to_id: dict[int, int]
) -> list[SegmentProfile]:
    """Per-segment size, buyer share, raw means and z-scores, ordered by segment id."""
    k = len(label_to_id)
    T, raw, buyer = prep.transformed, prep.raw, prep.buyer
    n, d = T.shape
    sizes = np.bincount(labels, minlength=k).astype(float)
    buyers = np.bincount(labels, weights=buyer.astype(float), minlength=k)
    blabels = labels[buyer]
    purchase = np.array([f.purchase for f in FEATURES])
    # Reference population per feature: buyers for purchase features, else everyone.
    ref_mean = np.empty(d)
    ref_std = np.empty(d)
    seg_mean = np.empty((k, d))
    raw_mean = np.empty((k, d))
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(d):
            if purchase[j]:
                vals = T[buyer, j]
                seg_mean[:, j] = np.bincount(blabels, weights=vals, minlength=k) / buyers
            else:
                vals = T[:, j]
                seg_mean[:, j] = np.bincount(labels, weights=vals, minlength=k) / sizes
            ref_mean[j] = vals.mean() if vals.size else np.nan
            ref_std[j] = vals.std() if vals.size else np.nan
            ok = ~np.isnan(raw[:, j])
            raw_mean[:, j] = np.bincount(labels[ok], weights=raw[ok, j], minlength=k) / np.bincount(
                labels[ok], minlength=k
            )
        z = np.where(ref_std > 1e-12, (seg_mean - ref_mean) / ref_std, 0.0)
        z = np.where(np.isnan(seg_mean), np.nan, z)
    names = [f.name for f in FEATURES]
    profiles = [
        SegmentProfile(
            label=label,
            segment_id=label_to_id[label],
            size=int(sizes[label]),
            share=float(sizes[label] / n) if n else 0.0,
            buyer_share=float(buyers[label] / sizes[label]) if sizes[label] else 0.0,
            z={name: float(z[label, j]) for j, name in enumerate(names)},
            means={name: float(raw_mean[label, j]) for j, name in enumerate(names)},
        )
        for label in range(k)
    ]
    return sorted(profiles, key=lambda p: p.segment_id)


def _candidates(p: SegmentProfile) -> list[tuple[float, str]]:
    """Every name that fits, with a strength score; the strongest wins."""

    def z(name: str) -> float:
        value = p.z.get(name, math.nan)
        return 0.0 if math.isnan(value) else value

    out: list[tuple[float, str]] = [(0.0, "Occasional")]
    # Behavioural traits that apply to buyers and non-buyers alike.
    rules: list[tuple[str, Callable[[], float]]] = [
        ("Mobile-first", lambda: z("mobile_share")),
        (
            "Weekend buyers" if p.buyer_share >= BUYER_SEGMENT else "Weekend browsers",
            lambda: z("weekend_share"),
        ),
        ("Cart abandoners", lambda: z("cart_adds_without_purchase")),
        ("Highly engaged", lambda: min(z("sessions_30d"), z("page_views_30d"))),
    ]
    if p.buyer_share >= BUYER_SEGMENT:
        # Value and lifecycle traits are what marketing acts on first,
        # hence the small weight over purely behavioural ones.
        rules += [
            ("New", lambda: -z("tenure_days") * 1.1),
            ("High-value loyal", lambda: min(z("frequency"), z("monetary")) * 1.25),
            ("Lapsed", lambda: z("recency_days") * 1.1 if z("sessions_30d") <= 0 else 0.0),
            ("Discount-driven", lambda: z("discount_share")),
            ("Big-basket buyers", lambda: z("avg_order_value") if z("frequency") < TRAIT_Z else 0),
        ]
    for name, score in rules:
        s = float(score())
        if s > TRAIT_Z:
            out.append((s, name))
    if p.buyer_share < BUYER_SEGMENT:
        # "Has never ordered" is the defining fact of such a segment; it beats
        # every z-score trait, except that brand-new sign-ups are new first.
        engaged = max(z("sessions_90d"), z("page_views_90d"), z("cart_adds_without_purchase"))
        base = "Browsers, no purchase" if engaged > 0 else "Dormant, no purchase"
        out.append((10.0 + max(engaged, 0.0), base))
        if -z("tenure_days") > 1.0:
            out.append((10.0 - z("tenure_days"), "New, no purchase yet"))
    return sorted(out, key=lambda c: (-c[0], c[1]))


def _trait_text(p: SegmentProfile) -> str:
    labels = {f.name: f.label for f in FEATURES}
    purchase = {f.name for f in FEATURES if f.purchase}
    ranked = sorted(
        ((v, k) for k, v in p.z.items() if not math.isnan(v) and abs(v) >= TRAIT_Z),
        key=lambda t: (-abs(t[0]), t[1]),
    )[:4]
    parts = []
    if p.buyer_share < BUYER_SEGMENT:
        parts.append(f"{p.buyer_share:.0%} have ordered")
    for v, name in ranked:
        ref = " vs buyers" if name in purchase else ""
        parts.append(f"{labels[name]} {v:+.1f}σ{ref}".replace("-", "−"))
    return "; ".join(parts) if parts else "close to the population average"


def name_segments(profiles: list[SegmentProfile]) -> None:
    """Set ``name`` and ``traits`` in place; names are unique within the run.

    The most distinctive segment claims a name first (then segment id breaks
    ties). A later segment with the same best name gets its next trait added,
    e.g. "Lapsed (mobile-first)", and failing that a counter "Lapsed (2)".
    """
    for p in profiles:
        p.candidates = _candidates(p)
        p.traits = _trait_text(p)
    taken: set[str] = set()
    holder: dict[str, SegmentProfile] = {}  # who got the plain name
    for p in sorted(profiles, key=lambda q: (-q.candidates[0][0], q.segment_id)):
        primary = p.candidates[0][1]
        name = primary
        if name in taken:
            # A second trait only disambiguates if this segment has it clearly
            # more than the plain-name segment; otherwise the suffix would lie.
            rival = dict((n, sc) for sc, n in holder[primary].candidates)
            name = next(
                (
                    f"{primary} ({other[0].lower()}{other[1:]})"
                    for score, other in p.candidates[1:]
                    if other not in (primary, "Occasional")
                    and score - rival.get(other, 0.0) > TRAIT_Z
                    and f"{primary} ({other[0].lower()}{other[1:]})" not in taken
                ),
                "",
            )
            counter = 2
            while not name or name in taken:
                name = f"{primary} ({counter})"
                counter += 1
        else:
            holder[primary] = p
        taken.add(name)
        p.name = name
