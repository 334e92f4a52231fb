import json
import xml.etree.ElementTree as ET

import pytest

from components.app.label_studio import LabelStudioError, export_tasks, import_export, labeling_config, read_export
from components.config import DIMENSIONS
from components.preference.ratings import RatingsError, read_ratings


def ls_export(tasks_json, ratings_by_user, cancelled_user=None):
    """What Label Studio's JSON export holds after annotating the exported tasks (labelstud.io/guide/task_format)."""
    out = []
    for t, task in enumerate(tasks_json, start=1):
        annotations = []
        for user, score in ratings_by_user.items():
            annotations.append({
                "id": 1000 * t + user, "completed_by": user, "was_cancelled": False, "ground_truth": False,
                "created_at": "2026-12-03T10:00:00.000000Z", "updated_at": "2026-12-03T10:00:05.000000Z",
                "lead_time": 5.1, "result_count": 0, "task": t, "project": 1,
                "result": [{"id": f"r{t}{user}{d}", "from_name": d, "to_name": "video", "type": "rating",
                            "origin": "manual", "value": {"rating": score(t, d)}} for d in DIMENSIONS],
            })
        if cancelled_user is not None:
            annotations.append({"id": 99000 + t, "completed_by": {"id": cancelled_user, "email": "x@y.z"},
                                "was_cancelled": True, "result": [], "task": t})
        out.append({"id": t, "data": task["data"], "annotations": annotations, "predictions": [],
                    "meta": {}, "created_at": "2026-12-03T09:00:00Z", "updated_at": "2026-12-03T10:00:05Z",
                    "inner_id": t, "total_annotations": len(annotations), "cancelled_annotations": 1, "project": 1})
    return out


def test_labeling_config_has_the_three_rating_controls():
    root = ET.fromstring(labeling_config())
    ratings = root.findall("Rating")
    assert [r.get("name") for r in ratings] == list(DIMENSIONS)
    assert all(r.get("toName") == "video" and r.get("maxRating") == "5" for r in ratings)
    assert root.find("Video").get("value") == "$video" and root.find("Audio").get("value") == "$audio"


def test_round_trip_into_human_ratings(pool, tmp_path):
    paths = export_tasks(pool, "http://127.0.0.1:8081/data/local-files/?d=pool", tmp_path / "ls")
    tasks = json.loads(paths["tasks"].read_text())
    assert len(tasks) == len(pool.candidate_ids)
    for task in tasks:  # blind: no generator name in what the annotator's page loads
        assert "gen" not in task["data"]["video"] and task["data"]["video"].endswith(".mp4")
    export = tmp_path / "project-1-at-2026-12-03.json"
    export.write_text(json.dumps(ls_export(tasks, {3: lambda t, d: 1 + t % 5, 7: lambda t, d: 1 + (t + 1) % 5},
                                           cancelled_user=9)))
    rows, counts = read_export(export)
    assert (counts.tasks, counts.annotations, counts.cancelled) == (6, 18, 6)
    assert counts.ratings == len(rows) == 6 * 2 * len(DIMENSIONS)
    assert set(rows["rater_id"]) == {"ls-3", "ls-7"}
    out, _ = import_export(export, tmp_path / "human.jsonl", pool.candidate_ids)
    back = read_ratings(out)  # what `annotate --set annotate.source=human` reads
    assert len(back) == len(rows) and set(back["candidate_id"]) == set(pool.candidate_ids)


def test_bad_exports_write_nothing(pool, tmp_path):
    tasks = json.loads(export_tasks(pool, "http://h/", tmp_path / "ls")["tasks"].read_text())
    bad_score = tmp_path / "bad.json"
    bad_score.write_text(json.dumps(ls_export(tasks, {1: lambda t, d: 7})))
    with pytest.raises(RatingsError, match="Likert"):
        import_export(bad_score, tmp_path / "out.jsonl", pool.candidate_ids)
    minimal = tmp_path / "min.json"
    minimal.write_text(json.dumps({"lip_sync": 3}))
    with pytest.raises(LabelStudioError, match="list of tasks"):
        read_export(minimal)
    no_id = tmp_path / "noid.json"
    no_id.write_text(json.dumps([{"id": 5, "data": {"video": "x.mp4"}, "annotations": []}]))
    with pytest.raises(LabelStudioError, match="task 5: data has no candidate_id"):
        read_export(no_id)
    assert not (tmp_path / "out.jsonl").exists()
