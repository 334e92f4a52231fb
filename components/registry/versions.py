"""Registering bundles as versions of an MLflow registered model.

A bundle is identified by the digest of its files (`talkalign.bundle_digest` tag on the version), so
registering the same bundle again reuses its version instead of creating a duplicate. A version is created
with `talkalign.registration=pending` and marked `complete` only after every tag and the `candidate` alias
are set; when anything fails in between, the version is deleted (or, when even that fails, stays `pending`:
never reused, never promotable, and removed by the next registration of the same bundle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"
TAG_DIGEST = "talkalign.bundle_digest"
TAG_STATE = "talkalign.registration"  # pending -> complete
TAG_METRIC = "talkalign.metric."  # + metric name: the candidate's evaluation metrics
PENDING, COMPLETE = "pending", "complete"


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message names the model and version."""


class MetricsError(ValueError):
    """The evaluation metrics are missing or unusable; the message names the file."""


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    digest: str
    reused: bool  # an existing complete version of the same bundle was reused
    source: str


# ---------------------------------------------------------------- inputs


def bundle_digest(directory: str | Path) -> str:
    """sha256 over every file of the bundle: relative path, size and content, in path order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RegistryError(f"{directory}: not a directory")
    outer = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if not files:
        raise RegistryError(f"{directory}: empty bundle directory")
    for path in files:
        inner = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                inner.update(chunk)
        rel = path.relative_to(directory).as_posix()
        outer.update(f"{rel}\0{path.stat().st_size}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def load_variant_metrics(path: str | Path, variant: str) -> dict[str, Any]:
    """The metrics of one variant from the evaluate stage's `{variant: {metric: value}}` json."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{path}: metrics file not found (run the evaluate stage first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetricsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MetricsError(f"{path}: expected {{variant: {{metric: value}}}}, got {type(data).__name__}")
    if variant not in data:
        raise MetricsError(f"{path}: no metrics for variant {variant!r} (it has {sorted(data)})")
    metrics = data[variant]
    if not isinstance(metrics, dict) or not metrics:
        raise MetricsError(f"{path}: metrics of {variant!r} are empty or not a mapping")
    return dict(metrics)


# ---------------------------------------------------------------- versions


def is_missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not is_missing(exc):
            raise
        try:
            client.create_registered_model(name, description="talkalign talking-portrait models (see talkalign README)")
        except MlflowException as again:
            if again.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by someone else
                raise


def versions_of_bundle(client: MlflowClient, name: str, digest: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_DIGEST}` = '{digest}'")
    return sorted(found, key=lambda mv: int(mv.version))


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    version = str(version).strip()
    if not version.isdigit():
        raise RegistryError(f"{name}: {version!r} is not a version number")
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if not is_missing(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        known = sorted((str(mv.version) for mv in client.search_model_versions(f"name = '{name}'")), key=int)
        raise RegistryError(f"{name}: no version {version} (versions: {', '.join(known) or 'none'})") from exc


def is_ready(mv: ModelVersion) -> bool:
    return str(mv.status) == "READY"


def is_complete(mv: ModelVersion) -> bool:
    return mv.tags.get(TAG_STATE) == COMPLETE and is_ready(mv)


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The metrics recorded on a version (tags `talkalign.metric.*`); unparsable values become NaN."""
    metrics = {}
    for key, value in mv.tags.items():
        if key.startswith(TAG_METRIC):
            try:
                metrics[key[len(TAG_METRIC):]] = float(value)
            except ValueError:
                metrics[key[len(TAG_METRIC):]] = math.nan
    return metrics


def set_version_tags(client: MlflowClient, mv: ModelVersion, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(mv.name, mv.version, key, str(value))


def set_version_metrics(client: MlflowClient, mv: ModelVersion, metrics: Mapping[str, Any]) -> None:
    wanted = {f"{TAG_METRIC}{key}": (repr(float(value)) if isinstance(value, (int, float)) else str(value))
              for key, value in metrics.items()}
    for stale in set(k for k in mv.tags if k.startswith(TAG_METRIC)) - set(wanted):
        client.delete_model_version_tag(mv.name, mv.version, stale)
    set_version_tags(client, mv, wanted)


def discard_version(client: MlflowClient, mv: ModelVersion, why: str) -> None:
    """Delete a version that never completed; if that fails too, leave it marked `pending` (never used)."""
    try:
        if CHAMPION in (mv.aliases or []):  # cannot happen through this module; never delete what is served
            raise RegistryError(f"{mv.name} version {mv.version} is the champion")
        client.delete_model_version(mv.name, mv.version)
        log.warning("%s version %s deleted: %s", mv.name, mv.version, why)
    except Exception as exc:  # the original error matters more; the next registration retries the cleanup
        log.warning("%s version %s could not be deleted (%s); it stays %s: %s", mv.name, mv.version, exc, PENDING, why)


def register_bundle(
    client: MlflowClient,
    name: str,
    bundle_dir: str | Path,
    *,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Registration:
    """Register a bundle as a version of `name` (or reuse the complete version of the same bundle); alias it
    `candidate`. Logging the model needs an active MLflow run (the register stage's) on the same server.

    tags: lineage tags for the version; metrics: recorded as `talkalign.metric.*` tags (the gates read the
    champion's metrics from there). Both are refreshed when a version is reused.
    """
    from components.registry.pyfunc import log_pyfunc_model

    bundle_dir = Path(bundle_dir)
    digest = bundle_digest(bundle_dir)
    ensure_registered_model(client, name)

    existing = None
    for mv in versions_of_bundle(client, name, digest):
        if existing is None and is_complete(mv):
            existing = mv
        elif not is_complete(mv):
            discard_version(client, mv, "left behind by an interrupted registration of the same bundle")
    if existing is not None:
        set_version_tags(client, existing, tags or {})
        set_version_metrics(client, existing, metrics or {})
        client.set_registered_model_alias(name, CANDIDATE, str(existing.version))
        return Registration(name, str(existing.version), digest, True, existing.source)

    info = log_pyfunc_model(bundle_dir, metadata={"bundle_digest": digest})
    mv = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=info.run_id,
        tags={TAG_DIGEST: digest, TAG_STATE: PENDING},
        model_id=getattr(info, "model_id", None),
    )
    try:
        if not is_ready(mv):
            raise RegistryError(f"{name} version {mv.version}: registration ended with status {mv.status}")
        set_version_tags(client, mv, tags or {})
        set_version_metrics(client, mv, metrics or {})
        client.set_registered_model_alias(name, CANDIDATE, mv.version)
        client.set_model_version_tag(name, mv.version, TAG_STATE, COMPLETE)  # last: marks a whole registration
    except BaseException as exc:  # also KeyboardInterrupt: no half-registered version stays behind
        discard_version(client, mv, f"registration failed: {type(exc).__name__}: {exc}")
        raise
    return Registration(name, str(mv.version), digest, False, mv.source)
