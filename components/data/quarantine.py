"""The quarantine list: clips a stage refused, one JSON row each, with the reason.

A run rebuilds the list from scratch: rows stream into a temp file beside the target, and `commit()`
swaps it in with os.replace, so readers see either the previous run's complete list or this run's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

_MAX_REASON_CHARS = 400


@dataclass(frozen=True)
class QuarantineRow:
    clip: str  # source path relative to the input root (posix)
    reason: str  # one line
    stage: str = "ingest"


def one_line(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    """Collapse whitespace (newlines from library errors) and cap the length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Quarantine:
    """Append-only writer: `add()` rows during a run, `commit()` at the end; as a context manager it
    commits on success and discards the partial list on error (the previous run's list stays)."""

    def __init__(self, path: str | Path, stage: str = "ingest"):
        self.path = Path(path)
        self.stage = stage
        self.rows: list[QuarantineRow] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self._file = self._tmp.open("w", encoding="utf-8")

    def add(self, clip: str, reason: str) -> QuarantineRow:
        row = QuarantineRow(clip=clip, reason=one_line(reason), stage=self.stage)
        self.rows.append(row)
        self._file.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        self._file.flush()
        return row

    def commit(self) -> Path:
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file.closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def read_quarantine(path: str | Path) -> list[QuarantineRow]:
    """Rows of a quarantine list; a missing file means nothing was quarantined."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            rows.append(QuarantineRow(clip=data["clip"], reason=data["reason"], stage=data.get("stage", "ingest")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: malformed quarantine row ({exc})") from exc
    return rows
