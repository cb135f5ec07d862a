"""Small file-system helpers the writers of published files share."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (after a rename, the directory makes it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def code_digest(
    root: Path, parts: Iterable[str], *, exclude: frozenset[str] = frozenset({"__pycache__"})
) -> str:
    """sha256 over the files (or folders, recursively) ``parts`` of ``root``, in the
    order given, names included: a changed or renamed file is a changed digest.
    Folders named in ``exclude`` are skipped by their path *inside* ``root``, so a
    checkout that itself lives under such a folder is still hashed."""
    code = hashlib.sha256()
    for part in parts:
        top = root / part
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not exclude & set(relative.parts):
                code.update(relative.as_posix().encode())
                code.update(path.read_bytes())
    return code.hexdigest()
