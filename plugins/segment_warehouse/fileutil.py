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


def code_digest(package: Path, parts: Iterable[str]) -> str:
    """sha256 over the files (or folders, recursively) ``parts`` of ``package``, names
    included, bytecode excluded: a changed source file is a changed digest."""
    code = hashlib.sha256()
    for part in parts:
        root = package / part
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                code.update(path.relative_to(package).as_posix().encode())
                code.update(path.read_bytes())
    return code.hexdigest()
