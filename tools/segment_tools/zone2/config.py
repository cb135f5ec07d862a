"""Knobs of a zone2 landing zone and the two presets used in docs/evaluation.md."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date


@dataclass(frozen=True)
class Persona:
    """Behaviour a persona plants; every person draws around these means."""

    name: str
    share: float
    orders_per_year: float
    aov_usd: float
    discount_prob: float
    discount_depth: float
    # device mix over (desktop, mobile, tablet, app)
    device_mix: tuple[float, float, float, float]
    weekend_share: float
    sessions_per_month: float
    events_per_session: float
    tenure_days: tuple[int, int]
    # days between the last activity and the as-of date
    lapse_days: tuple[int, int]


PERSONAS: tuple[Persona, ...] = (
    Persona("vip_loyal", 0.12, 16.0, 170.0, 0.05, 0.10, (0.15, 0.20, 0.05, 0.60), 0.25,
            2.0, 4.0, (300, 900), (0, 15)),
    Persona("bargain_hunter", 0.18, 9.0, 32.0, 0.85, 0.30, (0.30, 0.60, 0.10, 0.00), 0.30,
            1.5, 5.0, (200, 900), (0, 30)),
    Persona("weekend_family", 0.15, 5.0, 95.0, 0.20, 0.15, (0.15, 0.20, 0.55, 0.10), 0.85,
            1.0, 4.0, (200, 900), (0, 45)),
    Persona("window_shopper", 0.20, 0.8, 55.0, 0.10, 0.10, (0.20, 0.75, 0.05, 0.00), 0.35,
            3.0, 9.0, (100, 700), (0, 20)),
    Persona("lapsed", 0.20, 4.0, 70.0, 0.25, 0.20, (0.60, 0.30, 0.10, 0.00), 0.30,
            0.5, 3.0, (500, 1000), (150, 480)),
    Persona("newcomer", 0.15, 14.0, 48.0, 0.55, 0.25, (0.30, 0.50, 0.10, 0.10), 0.30,
            2.5, 4.0, (5, 60), (0, 5)),
)


@dataclass(frozen=True)
class ZoneConfig:
    persons: int = 5000
    seed: int = 7
    as_of: date = date(2026, 11, 30)
    # days of web/app tracking before as_of (orders and CRM go back further)
    event_days: int = 120
    holdout_days: int = 0
    # "end": every person's quiet spell (lapse_days) ends the history at as_of, and
    # those lapsed <= 45 days resume at their full rate right after it (the sets in
    # docs/evaluation.md). "stationary": only lapses over 45 days (people who left)
    # end the history early; everyone else orders up to as_of, so recency comes
    # from the gaps of their own order process and the held-back month continues
    # the history's rate instead of jumping after a quiet spell planted at as_of.
    lapse: str = "end"
    # share of persons with at least one CRM record (the rest only check out as guests)
    crm_share: float = 0.85
    # share of CRM persons with a second record; of those, share with a third
    dup_share: float = 0.12
    triple_share: float = 0.25
    # weights of how a duplicate record relates to the first one by contact data
    dup_contact_weights: dict[str, float] = field(default_factory=lambda: {
        "same_email": 0.35, "new_email_same_phone": 0.25, "same_email_new_phone": 0.10,
        "no_shared_contact": 0.30,
    })
    household_share: float = 0.08
    twin_pairs_per_1000: float = 4.0
    father_son_per_1000: float = 4.0
    placeholder_email_share: float = 0.02
    placeholder_phone_share: float = 0.015
    guest_share: float = 0.25
    # how a person types their email at a guest checkout; one habit per person
    guest_email_habits: dict[str, float] = field(default_factory=lambda: {
        "exact": 0.55, "case_space": 0.30, "plus_tag": 0.08, "gmail_dots": 0.07,
    })
    login_prob: float = 0.35
    shared_device_prob: float = 0.5
    bot_share: float = 0.02
    redelivery_share: float = 0.01
    crm_update_share: float = 0.10

    def with_(self, **kw: object) -> ZoneConfig:
        return replace(self, **kw)  # type: ignore[arg-type]


LAPSE_MODES: tuple[str, ...] = ("end", "stationary")

PROFILES: dict[str, dict[str, object]] = {
    "easy": {},
    "hard": {
        "dup_share": 0.30,
        "triple_share": 0.35,
        "dup_contact_weights": {
            "same_email": 0.20, "new_email_same_phone": 0.20, "same_email_new_phone": 0.10,
            "no_shared_contact": 0.50,
        },
        "household_share": 0.20,
        "twin_pairs_per_1000": 10.0,
        "father_son_per_1000": 10.0,
        "placeholder_email_share": 0.05,
        "placeholder_phone_share": 0.04,
        "guest_share": 0.35,
        "guest_email_habits": {"exact": 0.40, "case_space": 0.30, "plus_tag": 0.15,
                               "gmail_dots": 0.15},
        "login_prob": 0.30,
        "shared_device_prob": 0.7,
        "bot_share": 0.04,
        "redelivery_share": 0.03,
    },
}
