"""The Label Studio round trip: tasks + a labeling config out, Label Studio's JSON export back in as ratings.

Export: one task per candidate (Label Studio's labeling config is fixed per project, while windows hold any number
of candidates), data = {video, audio, window_id, candidate_id}: the config shows only $video and $audio, so the
candidate id (which names its generator) stays hidden from annotators; video file names are opaque tokens.

Import reads the "JSON" export format documented at labelstud.io/guide/task_format: a list of tasks, each with
`data` and `annotations`, each annotation with `completed_by` (a user id, or a user object in some versions),
`was_cancelled` and `result` items {from_name, to_name, type: "rating", value: {rating: N}}. Cancelled (skipped)
annotations give no rating and are counted; anything else malformed raises LabelStudioError naming the task.
The rows then go through the same great-expectations suite as any human ratings (annotate reads the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd

from components.app.pool import RatingPool
from components.config import DIMENSIONS
from components.io.atomic import atomic_file, write_json

DIMENSION_TITLES = {"lip_sync": "Lip sync", "motion": "Motion naturalness", "quality": "Visual quality"}


class LabelStudioError(ValueError):
    """A Label Studio file cannot be imported; the message names the file, the task and the problem."""


def labeling_config() -> str:
    """The project's labeling interface: the candidate video, the window's audio, a 1-5 rating per dimension."""
    ratings = "\n".join(
        f'  <Header value={quoteattr(DIMENSION_TITLES[d])}/>\n'
        f'  <Rating name="{d}" toName="video" maxRating="5" required="true"/>' for d in DIMENSIONS
    )
    return ('<View>\n  <Video name="video" value="$video"/>\n  <Audio name="audio" value="$audio"/>\n'
            f"{ratings}\n</View>\n")


def export_tasks(pool: RatingPool, base_url: str, out_dir: str | Path, audio_url: str | None = None) -> dict[str, Path]:
    """Write tasks.json and labeling_config.xml into out_dir. Video URLs are base_url + the pool's relative path
    (serve the pool directory there, e.g. Label Studio's local-files storage); the window's audio is the video's
    own soundtrack unless audio_url (a pattern with {window_id}) names separate files."""
    out_dir = Path(out_dir)
    base = base_url.rstrip("/")
    tasks = []
    for wid, ids in pool.windows.items():
        for cid in ids:
            video = f"{base}/{pool.videos[cid]}"
            tasks.append({"data": {"video": video, "audio": audio_url.format(window_id=wid) if audio_url else video,
                                   "window_id": wid, "candidate_id": cid}})
    tasks_path, config_path = out_dir / "tasks.json", out_dir / "labeling_config.xml"
    write_json(tasks_path, tasks)
    with atomic_file(config_path) as tmp:
        tmp.write_text(labeling_config())
    return {"tasks": tasks_path, "config": config_path}


@dataclass
class ImportCounts:
    tasks: int = 0
    annotations: int = 0
    cancelled: int = 0  # skipped in Label Studio: no rating
    ratings: int = 0


def _rater(completed_by: object, where: str) -> str:
    if isinstance(completed_by, bool) or completed_by is None:
        raise LabelStudioError(f"{where}: annotation has no completed_by")
    if isinstance(completed_by, int):
        return f"ls-{completed_by}"
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("id")
        if who:
            return str(who) if isinstance(who, str) else f"ls-{who}"
    if isinstance(completed_by, str) and completed_by.strip():
        return completed_by.strip()
    raise LabelStudioError(f"{where}: cannot tell the annotator from completed_by={completed_by!r}")


def read_export(path: str | Path) -> tuple[pd.DataFrame, ImportCounts]:
    """Label Studio JSON export -> ratings rows (candidate_id, rater_id, dimension, score) and counts."""
    path = Path(path)
    if not path.is_file():
        raise LabelStudioError(f"{path}: no such Label Studio export")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelStudioError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(tasks, list):
        raise LabelStudioError(f"{path}: expected the JSON export (a list of tasks), got a {type(tasks).__name__}")
    counts, rows = ImportCounts(tasks=len(tasks)), []
    for t, task in enumerate(tasks):
        where = f"{path}: task {task.get('id', t) if isinstance(task, dict) else t}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LabelStudioError(f"{where}: not a task object with data (is this the JSON, not JSON_MIN, export?)")
        cid = task["data"].get("candidate_id")
        if not cid:
            raise LabelStudioError(f"{where}: data has no candidate_id (tasks must come from talkalign's export)")
        for annotation in task.get("annotations") or []:
            counts.annotations += 1
            if annotation.get("was_cancelled"):
                counts.cancelled += 1
                continue
            rater = _rater(annotation.get("completed_by"), where)
            for item in annotation.get("result") or []:
                if item.get("type") != "rating":
                    continue
                dim, value = item.get("from_name"), (item.get("value") or {}).get("rating")
                if dim not in DIMENSIONS:
                    raise LabelStudioError(f"{where}: rating control {dim!r} is not one of {list(DIMENSIONS)}")
                rows.append({"candidate_id": str(cid), "rater_id": rater, "dimension": dim, "score": value})
                counts.ratings += 1
    return pd.DataFrame(rows, columns=["candidate_id", "rater_id", "dimension", "score"]), counts


def import_export(path: str | Path, out_path: str | Path, known_candidates: list[str]) -> tuple[Path, ImportCounts]:
    """Read a Label Studio export, check it with the ratings suite, and write the rows as .jsonl/.csv ratings."""
    from components.preference.ratings import check_ratings

    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".jsonl", ".csv"):
        raise LabelStudioError(f"{out_path}: write the ratings as .jsonl or .csv")
    rows, counts = read_export(path)
    checked, _ = check_ratings(rows, known_candidates, str(path))  # RatingsError before anything is written
    with atomic_file(out_path) as tmp:
        if out_path.suffix.lower() == ".csv":
            checked.to_csv(tmp, index=False)
        else:
            checked.to_json(tmp, orient="records", lines=True)
    return out_path, counts
