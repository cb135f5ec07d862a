"""Personalisation: content rules -> decisions, experiments, audience exports.

* :func:`load_rules` reads and strictly validates ``SEGMENTS_CONTENT_RULES``
  (raises :class:`RulesError`);
* :func:`decide` writes ``personalisation.*`` in the working warehouse;
* :func:`export_audiences` writes audience files from the published snapshot.

See docs/personalisation.md.
"""

from __future__ import annotations

from segment_warehouse.personalisation.decide import DecideResult, bucket, decide
from segment_warehouse.personalisation.exports import ExportResult, export_audiences
from segment_warehouse.personalisation.rules import RulesError, RuleSet, load_rules

__all__ = [
    "DecideResult",
    "ExportResult",
    "RuleSet",
    "RulesError",
    "bucket",
    "decide",
    "export_audiences",
    "load_rules",
]
