"""zone2 --lapse stationary: quiet spells end the history early only for people who left."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
from segment_tools.zone2 import ZoneConfig, generate

AS_OF = date(2026, 11, 30)


def _persons(out: Path, lapse: str) -> pd.DataFrame:
    generate(ZoneConfig(persons=300, seed=5, as_of=AS_OF, holdout_days=30, lapse=lapse), out)
    df = pd.read_csv(out / "truth" / "persons.csv", dtype=str, keep_default_na=False)
    return df.assign(last_active=pd.to_datetime(df["last_active"]).dt.date)


def test_stationary_lapse_keeps_the_active_ordering_up_to_as_of(tmp_path: Path) -> None:
    end = _persons(tmp_path / "end", "end")
    stat = _persons(tmp_path / "stationary", "stationary")
    # same people, same rates and the same held-back future rates
    cols = ["person_id", "persona", "rate_per_day", "future_rate_per_day", "active_at_as_of"]
    pd.testing.assert_frame_equal(end[cols], stat[cols])
    active = stat["active_at_as_of"] == "1"
    assert (stat.loc[active, "last_active"] == AS_OF).all()
    # default: the active ones mostly stop some days before as_of (the planted quiet spell)
    assert (end.loc[active, "last_active"] < AS_OF).mean() > 0.5
    # people who left (lapse > 45 days) stop where they stopped in either mode
    left = ~active
    assert left.any()
    assert (stat.loc[left, "last_active"] == end.loc[left, "last_active"]).all()
    assert (stat.loc[left, "last_active"] < AS_OF).all()
