"""Write a whole directory or file so that readers see the old version or the new one, never half of one."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The names the temporaries below get (`.{name}.{uuid}.tmp`, `.{name}.{uuid}.old`, `.{stem}.{uuid}.tmp{suffix}`):
# cleanup code may delete what a crashed writer left behind by this pattern (searched in a '/'-separated name).
TEMPORARY_NAME = re.compile(r"(^|/)\.[^/]+\.[0-9a-f]{32}\.(tmp|old)(\.[^/.]+)?$")


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `directory` to fill; on success it replaces `directory` by rename.

    On an exception the temporary directory is removed and `directory` is left as it was.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}.tmp")
    old = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}.old")
    tmp.mkdir()
    try:
        yield tmp
        if directory.exists():
            os.replace(directory, old)  # a directory can't be replaced by rename while it exists
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path of `path` to write; on success it replaces `path` by rename. The temporary
    name keeps the suffix (matplotlib picks the format from it); on an exception it is removed and `path` is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: dict | list) -> None:
    """Indented JSON (numpy floats as floats), written atomically."""
    import json

    text = json.dumps(data, indent=2, default=float)
    with atomic_file(path) as tmp:
        tmp.write_text(text)
