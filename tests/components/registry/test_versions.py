"""Registering bundles as versions: digests, metrics input, registrations that fail halfway (real mlflow server)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.registry.champion import promote
from components.registry.versions import (
    CANDIDATE,
    TAG_STATE,
    MetricsError,
    Registration,
    RegistryError,
    bundle_digest,
    load_variant_metrics,
    register_bundle,
    versions_of_bundle,
)

GOOD = {"sync_c": 3.0, "psnr": 20.0, "lip_corr": 0.4, "lip_err": 0.1}


def test_bundle_digest_follows_names_and_bytes(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "sub" / "w.safetensors").write_bytes(b"weights")
    (bundle / "bundle.json").write_text("{}")
    first = bundle_digest(bundle)
    assert bundle_digest(bundle) == first
    (bundle / "bundle.json").write_text("{ }")
    assert bundle_digest(bundle) != first
    with pytest.raises(RegistryError, match="empty bundle directory"):
        bundle_digest((tmp_path / "empty").mkdir() or tmp_path / "empty")
    with pytest.raises(RegistryError, match="not a directory"):
        bundle_digest(tmp_path / "absent")


def test_variant_metrics_errors_name_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(MetricsError, match=r"metrics\.json: metrics file not found"):
        load_variant_metrics(path, "dpo")
    path.write_text(json.dumps({"phase2": {"psnr": 20.0}, "dpo": {}}))
    assert load_variant_metrics(path, "phase2") == {"psnr": 20.0}
    with pytest.raises(MetricsError, match=r"no metrics for variant 'tlpo' \(it has \['dpo', 'phase2'\]\)"):
        load_variant_metrics(path, "tlpo")
    with pytest.raises(MetricsError, match="metrics of 'dpo' are empty"):
        load_variant_metrics(path, "dpo")


def _register(client: MlflowClient, name: str, bundle_dir: Path, metrics: dict) -> Registration:
    with mlflow.start_run(run_name="register"):
        return register_bundle(client, name, bundle_dir, tags={"talkalign.git_commit": "abc"}, metrics=metrics)


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


@pytest.mark.slow
def test_failed_registration_leaves_no_version_and_rerun_recovers(client, bundles):
    name = "talkalign-failures"
    a, _ = bundles
    digest = bundle_digest(a)

    def gone(*args, **kwargs):
        raise RuntimeError("tracking server went away")

    with pytest.MonkeyPatch.context() as patch:
        # Fails after the version was created: the version is deleted again.
        patch.setattr(client, "set_registered_model_alias", gone)
        with pytest.raises(RuntimeError, match="went away"):
            _register(client, name, a, GOOD)
        assert versions_of_bundle(client, name, digest) == []

        # Fails and cannot even clean up (as if killed): the version stays pending.
        patch.setattr(client, "delete_model_version", gone)
        with pytest.raises(RuntimeError, match="went away"):
            _register(client, name, a, GOOD)
    [pending] = versions_of_bundle(client, name, digest)
    assert pending.tags[TAG_STATE] == "pending"
    with pytest.raises(RegistryError, match="registration is 'pending', not complete"):
        promote(client, name, pending.version, reason="try")  # never promotable

    # The rerun removes the leftover and registers once; a second rerun reuses that version.
    done = _register(client, name, a, GOOD)
    [complete] = versions_of_bundle(client, name, digest)
    assert complete.version == done.version != pending.version and complete.tags[TAG_STATE] == "complete"
    assert _register(client, name, a, GOOD).version == done.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert _aliases(client, name) == {CANDIDATE: done.version}  # registering alone never makes a champion
