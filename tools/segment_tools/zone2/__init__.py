"""zone2: an independent landing-zone generator with planted truth.

Written from the landing-zone contract (DESIGN.md section 3) and the published
outputs (sections 5-7) only, to measure the pipeline on data whose shape was
not chosen by the people who wrote the pipeline. It plants behaviour personas,
messy identity (duplicate CRM records that share no email or phone, nicknames,
transposed names, swapped birth dates, households, twins, father/son,
placeholder identifiers), devices, bots and orders, and writes the truth next
to the landing zone so :mod:`segment_tools.evaluate_zone` can score a run.

    python -m segment_tools.zone2 --persons 5000 --seed 7 --as-of 2026-11-30 --out DIR
"""

from segment_tools.zone2.config import PROFILES, ZoneConfig
from segment_tools.zone2.generate import generate

__all__ = ["PROFILES", "ZoneConfig", "generate"]
