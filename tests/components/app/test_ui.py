"""The Animate handler on bad input, called as Gradio calls it: a message for the page, nothing written, no hang
(a registry alias that does not exist, a tracking server that does not answer, an upload over the size limit)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from components.app.ui import AppConfig, animate_handler


@pytest.fixture
def uploads(tmp_path):
    portrait, speech = tmp_path / "portrait.png", tmp_path / "speech.wav"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(portrait)
    sf.write(speech, np.zeros(4000, np.float32), 16000)
    return portrait, speech


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def run(cfg: AppConfig, portrait, speech, model: str) -> tuple[object, str, float]:
    started = time.perf_counter()
    video, message = animate_handler(cfg)(str(portrait), str(speech), model, 0, 0, 0, progress=lambda *a, **k: None)
    return video, message, time.perf_counter() - started


def test_a_registry_alias_that_does_not_exist_answers_at_once(tmp_path, uploads, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("talkalign")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as `talkalign app --tracking-uri` sets the default registry
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    cfg = AppConfig(pool=None, db_path=tmp_path / "r.sqlite", out_dir=tmp_path / "out", tracking_uri=uri)
    cfg.out_dir.mkdir()
    video, message, seconds = run(cfg, *uploads, "models:/talkalign@nope")
    assert video is None and "Could not animate" in message and "models:/talkalign@nope" in message
    assert seconds < 20 and list(cfg.out_dir.iterdir()) == []
    print(f"\nmodels:/talkalign@nope answered in {seconds:.1f} s: {message[:140]}")


def test_a_tracking_server_that_does_not_answer_fails_fast(tmp_path, uploads, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # what `talkalign app` sets
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = AppConfig(pool=None, db_path=tmp_path / "r.sqlite", out_dir=tmp_path / "out", tracking_uri=uri)
    cfg.out_dir.mkdir()
    video, message, seconds = run(cfg, *uploads, "models:/talkalign@champion")
    assert video is None and "models:/talkalign@champion" in message and seconds < 30
    assert list(cfg.out_dir.iterdir()) == []


def test_an_upload_over_the_size_limit_is_refused_before_anything_loads(tmp_path, uploads):
    portrait, speech = uploads
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(16000 * 4, np.float32), 16000)  # 128 kB of float32 samples
    cfg = AppConfig(pool=None, db_path=tmp_path / "r.sqlite", out_dir=tmp_path / "out", max_upload_bytes=50_000,
                    default_model=str(tmp_path / "never-loaded"))
    cfg.out_dir.mkdir()
    video, message, _ = run(cfg, portrait, big, "")
    assert video is None and "big.wav" in message and "over the 50 kB upload limit" in message
    assert "upload limit" in message and list(cfg.out_dir.iterdir()) == [] and cfg._bundles == {}
    video, message, _ = run(cfg, tmp_path / "speech.wav", speech, "")  # a wav offered as the portrait
    assert video is None and "not an image file" in message
