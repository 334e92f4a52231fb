"""atomic_file: readers see the old file or the new one; a failed write leaves the old one and no temp file."""

from __future__ import annotations

import pytest

from components.io.atomic import atomic_file


def test_replaces_the_file_and_keeps_the_suffix(tmp_path):
    path = tmp_path / "sub" / "chart.png"
    with atomic_file(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == path.parent and not path.exists()
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["chart.png"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
