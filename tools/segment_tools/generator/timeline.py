"""Delivery calendar: which file (window) a timestamp is delivered in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from .text import MS_PER_DAY, day_ms


@dataclass(frozen=True)
class Timeline:
    start: date
    days: int
    window_days: int
    is_delta: bool = False

    @property
    def t0(self) -> int:
        return day_ms(self.start)

    @property
    def t1(self) -> int:
        return self.t0 + self.days * MS_PER_DAY

    @property
    def n_windows(self) -> int:
        return max(1, -(-self.days // self.window_days))

    def window_of(self, ms: np.ndarray) -> np.ndarray:
        w = (np.asarray(ms, dtype=np.int64) - self.t0) // (self.window_days * MS_PER_DAY)
        return np.clip(w, 0, self.n_windows - 1)

    def window_start(self, w: np.ndarray) -> np.ndarray:
        return self.t0 + np.asarray(w, dtype=np.int64) * self.window_days * MS_PER_DAY

    def delivery_date(self, w: int) -> date:
        """Files of window w are named by the day they are delivered (window end)."""
        return min(self.start + timedelta(days=(w + 1) * self.window_days),
                   self.start + timedelta(days=self.days))
