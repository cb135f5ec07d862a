"""Decision API (``make serve``): see :mod:`segment_warehouse.api.app`."""

from __future__ import annotations

from segment_warehouse.api.app import create_app

__all__ = ["create_app"]
