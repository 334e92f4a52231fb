"""atomic_file: readers see the old file or the new one; a failed write leaves the old one and no temp file."""

from __future__ import annotations

import pytest

from components.io.atomic import TEMPORARY_NAME, atomic_directory, atomic_file


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


def test_temporary_names_match_the_pattern_cleanup_uses(tmp_path):
    seen = []
    with atomic_file(tmp_path / "index.json") as tmp:
        seen.append(tmp.name)
        tmp.write_text("{}")
    with atomic_directory(tmp_path / "bundle") as tmp:
        seen.append(tmp.name)
    with atomic_file(tmp_path / "latest") as tmp:  # no suffix
        seen.append(tmp.name)
        tmp.write_text("x")
    assert all(TEMPORARY_NAME.search(f"v1/{name}") for name in seen), seen
    assert not any(TEMPORARY_NAME.search(name) for name in ("index.json", "v1/train-000000.tar", ".hidden.json"))
