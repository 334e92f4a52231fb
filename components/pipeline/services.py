"""The services a pipeline run needs, checked before any stage starts: MLflow, and every S3 location in params."""

from __future__ import annotations

from components.config import Params
from components.io.storage import StorageError, open_storage
from components.pipeline.dvc_process import ServiceUnreachable
from components.tracking import TrackingUnavailable, check_tracking_reachable, resolve_tracking_uri

__all__ = ["check_services_reachable", "s3_uris"]


def s3_uris(params: Params) -> list[str]:
    return sorted({uri for uri in (params.shard.output, params.data.shards) if str(uri).startswith("s3://")})


def check_services_reachable(params: Params) -> dict[str, str]:
    """{service: status} when MLflow answers and every S3 location is usable.

    Raises ServiceUnreachable when one did not answer (worth a retry), StorageError for a missing bucket or a
    refused key (deterministic: no retry).
    """
    uri = resolve_tracking_uri(params)
    try:
        check_tracking_reachable(uri)
    except TrackingUnavailable as exc:
        raise ServiceUnreachable(str(exc)) from exc
    checked = {"mlflow": uri}
    for s3 in s3_uris(params):
        try:
            open_storage(s3).ensure_ready()
        except StorageError as exc:
            if "cannot reach" in str(exc):
                raise ServiceUnreachable(str(exc)) from exc
            raise  # a missing bucket or a refused key: deterministic, no retry
        checked[s3] = "ok"
    return checked
