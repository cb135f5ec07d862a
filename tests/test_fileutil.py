"""fileutil: the source digest behind the build and model fingerprints, and fsync."""

from __future__ import annotations

from pathlib import Path

import pytest

from segment_warehouse.fileutil import code_digest, fsync_path


def _package(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.sql").write_text("select 1\n")
    return root


def test_code_digest_follows_content_names_and_parts(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    before = code_digest(package, ["a.py", "sub"])
    assert code_digest(package, ["a.py", "sub"]) == before

    (package / "sub" / "b.sql").write_text("select 2\n")
    changed = code_digest(package, ["a.py", "sub"])
    assert changed != before

    (package / "sub" / "b.sql").rename(package / "sub" / "c.sql")
    assert code_digest(package, ["a.py", "sub"]) != changed  # a rename is a change
    assert code_digest(package, ["a.py"]) != code_digest(package, ["a.py", "sub"])


def test_code_digest_ignores_bytecode(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    before = code_digest(package, ["sub"])
    (package / "sub" / "__pycache__").mkdir()
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"\0\1")
    assert code_digest(package, ["sub"]) == before


def test_fsync_path_takes_files_and_folders(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("durable\n")
    fsync_path(target)
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")
