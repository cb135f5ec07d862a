"""Deterministic sample-data generator for the landing zone (DESIGN.md section 3).

``python -m segment_tools.generator --customers N --seed S`` or
:func:`generate` from Python. Truth files describing what was planted
(personas, duplicates, bots, bad rows) go to a sibling ``truth`` directory.
"""

from .core import GenerationSummary, generate

__all__ = ["GenerationSummary", "generate"]
