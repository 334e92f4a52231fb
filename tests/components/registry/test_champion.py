"""Gated promotion, loading by alias, promotion by hand and rollback against a real `mlflow server` on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from mlflow import MlflowClient
from PIL import Image

from components.config import PromotionGate
from components.io.video import decode_video
from components.model.bundle import resolve_model_uri
from components.model.loading import load_bundle
from components.registry.champion import TAG_HISTORY, TAG_ROLLED_BACK, gated_promotion
from components.registry.versions import CANDIDATE, CHAMPION, TAG_DIGEST, TAG_STATE, Registration, register_bundle
from flows.cli import main as cli_main

pytestmark = pytest.mark.slow

GATES = (
    PromotionGate(metric="sync_c", direction="higher", max_regression=0.5),
    PromotionGate(metric="psnr", direction="higher", max_regression=0.5),
    PromotionGate(metric="lip_corr", direction="higher", max_regression=0.05),
)
GOOD = {"sync_c": 3.0, "psnr": 20.0, "lip_corr": 0.4, "lip_err": 0.1}
WORSE = {"sync_c": 2.0, "psnr": 20.2, "lip_corr": 0.41, "lip_err": 0.1}  # sync_c regresses by 1.0 > 0.5


def _register(client: MlflowClient, name: str, bundle_dir: Path, metrics: dict) -> Registration:
    with mlflow.start_run(run_name="register"):
        return register_bundle(client, name, bundle_dir, tags={"talkalign.git_commit": "abc"}, metrics=metrics)


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def _params_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"registry": {"model_name": name}}))
    return path


def test_register_gate_load_by_alias_promote_and_rollback(client, bundles, tmp_path, capsys):
    name = "talkalign"
    a, b = bundles

    # Register: version 1 is the candidate, tagged with its digest, lineage and metrics.
    first = _register(client, name, a, GOOD)
    assert (first.version, first.reused) == ("1", False)
    mv = client.get_model_version(name, "1")
    assert mv.tags[TAG_DIGEST] == first.digest and mv.tags[TAG_STATE] == "complete"
    assert mv.tags["talkalign.git_commit"] == "abc" and float(mv.tags["talkalign.metric.sync_c"]) == 3.0
    assert _aliases(client, name) == {CANDIDATE: "1"}

    # Rerun: the same bundle reuses its version, no duplicate.
    again = _register(client, name, a, {**GOOD, "psnr": 20.5})
    assert (again.version, again.reused) == ("1", True)
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert float(client.get_model_version(name, "1").tags["talkalign.metric.psnr"]) == 20.5  # metrics refreshed

    # No champion yet: promoted, and the description says why.
    def describe(r):
        return f"decision: {r.outcome}; {r.decision.reasons[0]}"

    result = gated_promotion(client, first, GOOD, GATES, describe=describe)
    assert (result.outcome, result.champion_before, result.champion_after) == ("promoted", None, "1")
    assert "no champion yet" in client.get_model_version(name, "1").description
    assert _aliases(client, name) == {CANDIDATE: "1", CHAMPION: "1"}
    assert gated_promotion(client, first, GOOD, GATES).outcome == "kept"  # a rerun changes nothing

    # A worse candidate: registered as candidate, refused, champion unchanged, reasons on the version.
    second = _register(client, name, b, WORSE)
    assert second.version == "2"
    refused = gated_promotion(client, second, WORSE, GATES, describe=lambda r: "\n".join(r.decision.reasons))
    assert (refused.outcome, refused.champion_after) == ("refused", "1")
    assert refused.champion_metrics["sync_c"] == 3.0  # the champion's metrics come from its version tags
    description = client.get_model_version(name, "2").description
    assert "refused: 1 of 3 gate(s) failed (sync_c)" in description and "exceeds the allowed 0.5" in description
    assert _aliases(client, name) == {CANDIDATE: "2", CHAMPION: "1"}

    # The champion loads as a pyfunc and animates an image with a wav; weights are files, nothing pickled.
    files = mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION}", dst_path=str(tmp_path / "dl"))
    names = {p.relative_to(files).as_posix() for p in Path(files).rglob("*") if p.is_file()}
    assert "artifacts/bundle/bundle.json" in names and "artifacts/bundle/transformer/config.json" in names
    assert any(n.endswith(".safetensors") for n in names)
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".pt", ".bin"))], names
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    assert {c.name for c in model.metadata.get_input_schema().inputs} >= {"image", "audio", "output", "steps"}
    image, audio = tmp_path / "ref.png", tmp_path / "speech.wav"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(image)
    t = np.arange(8000) / 16000
    sf.write(audio, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32), 16000)
    out = model.predict(pd.DataFrame({"image": [str(image)], "audio": [str(audio)],
                                      "output": [str(tmp_path / "out.mp4")], "steps": [2], "seed": [1]}))
    assert list(out["output"]) == [str(tmp_path / "out.mp4")]
    video = decode_video(tmp_path / "out.mp4")
    assert video.frames.shape == (round(0.5 * 25), 64, 64, 3) and video.audio is not None

    # By hand: promote 2 (whatever the gates said), then roll back to 1.
    params = _params_file(tmp_path, name)
    assert cli_main(["promote", "2", "--reason", "listeners preferred it", "--params", str(params)]) == 0
    assert "champion 1 -> 2 (promoted by hand: listeners preferred it)" in capsys.readouterr().out
    assert _aliases(client, name)[CHAMPION] == "2"
    assert "Promoted by hand" in client.get_model_version(name, "2").description
    assert client.get_registered_model(name).tags[TAG_HISTORY] == '["1", "2"]'
    served = resolve_model_uri(f"models:/{name}@{CHAMPION}", dst_path=tmp_path / "served")
    assert json.loads((served / "bundle.json").read_text())["lineage"]["run_id"] == "second"  # bundle b

    assert cli_main(["rollback", "--reason", "lip sync drifted", "--params", str(params)]) == 0
    assert "champion 2 -> 1 (rolled back: lip sync drifted)" in capsys.readouterr().out
    assert _aliases(client, name)[CHAMPION] == "1"
    assert "lip sync drifted" in client.get_model_version(name, "2").tags[TAG_ROLLED_BACK]
    assert load_bundle(f"models:/{name}@{CHAMPION}").meta.lineage["run_id"] == "abc"  # bundle a is served again

    # A rolled-back version is not promoted again by the gates, even when they would pass.
    assert gated_promotion(client, second, GOOD, GATES).outcome == "refused"
    assert _aliases(client, name)[CHAMPION] == "1"

    # Clear errors: unknown version, nothing earlier to roll back to.
    assert cli_main(["promote", "99", "--reason", "x", "--params", str(params)]) == 1
    assert "no version 99 (versions: 1, 2)" in capsys.readouterr().err
    assert cli_main(["rollback", "--params", str(params)]) == 1
    assert "version 1 is the first champion on record" in capsys.readouterr().err
    assert _aliases(client, name)[CHAMPION] == "1"
