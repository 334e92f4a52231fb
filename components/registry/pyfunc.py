"""The registered model as an MLflow pyfunc: `mlflow.pyfunc.load_model("models:/talkalign@champion")`.

The weights are not pickled: the model bundle directory (safetensors + diffusers/transformers folders, see
components/model/bundle.py) is an artifact of the MLflow model (`artifacts/bundle/`), and the Python model is
logged as code (`model_code.py`, MLflow's models-from-code), so loading needs the talkalign package importable.

predict takes a DataFrame, one row per video:

    image   path of the reference portrait            audio   path of the speech (any format animate reads)
    output  path of the video to write (.mp4/.mov/.mkv)
    pose    optional talkalign-keypoints-v1 json       prompt  optional text prompt
    steps, guidance, seed   optional sampling settings (default: the bundle's)

and returns a DataFrame with the column `output` (the written paths).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

BUNDLE_ARTIFACT = "bundle"  # the key of the bundle directory in context.artifacts
MODEL_CODE = Path(__file__).with_name("model_code.py")
REQUIRED_COLUMNS = ("image", "audio", "output")
OPTIONAL_COLUMNS = {"pose": str, "prompt": str, "steps": int, "guidance": float, "seed": int}

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "image"),
            ColSpec("string", "audio"),
            ColSpec("string", "output"),
            ColSpec("string", "pose", required=False),
            ColSpec("string", "prompt", required=False),
            ColSpec("long", "steps", required=False),
            ColSpec("double", "guidance", required=False),
            ColSpec("long", "seed", required=False),
        ]
    ),
    outputs=Schema([ColSpec("string", "output")]),
)


def _present(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _rows(model_input: Any) -> list[dict[str, Any]]:
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"talkalign model input lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)}")
    unknown = sorted(set(frame.columns) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS))
    if unknown:
        raise ValueError(f"talkalign model input has unknown column(s) {unknown}")
    return frame.to_dict(orient="records")


class TalkalignModel(mlflow.pyfunc.PythonModel):
    """Animates a portrait with speech through components.inference.animate.animate_files."""

    # predict has no type hints on purpose: the explicit SIGNATURE is the schema MLflow enforces.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from components.model.loading import load_bundle

        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):
        from components.inference.animate import animate_files

        outputs: list[str] = []
        for row in _rows(model_input):
            options = {
                key: cast(row[key]) for key, cast in OPTIONAL_COLUMNS.items() if key in row and _present(row[key])
            }
            out = animate_files(
                row["image"],
                row["audio"],
                row["output"],
                self.bundle,
                pose_path=options.get("pose"),
                prompt=options.get("prompt", ""),
                steps=options.get("steps"),
                guidance=options.get("guidance"),
                seed=options.get("seed"),
            )
            outputs.append(str(out))
        return pd.DataFrame({"output": outputs})


def pip_requirements() -> list[str]:
    """The inference stack at the versions installed here (talkalign itself must be importable as well)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "diffusers", "transformers", "safetensors", "numpy", "pandas", "av", "soundfile",
                    "pillow", "pydantic", "pyyaml", "mlflow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same filesystem: no second copy of the weights
    except OSError:
        shutil.copy2(src, dst)


def log_pyfunc_model(bundle_dir: str | Path, name: str = "model", metadata: dict[str, Any] | None = None):
    """Log the bundle as a pyfunc model of the active run; returns MLflow's ModelInfo.

    The bundle lands in the model's `artifacts/bundle/`: MLflow names an artifact directory after its source
    and refuses symlinks, so the files are staged (hard-linked when possible) in a directory called `bundle`.
    """
    with tempfile.TemporaryDirectory(prefix="talkalign-log-") as tmp:
        staged = Path(tmp) / BUNDLE_ARTIFACT
        shutil.copytree(Path(bundle_dir).resolve(), staged, copy_function=_link_or_copy)
        with warnings.catch_warnings():
            # An input example would need real image and audio files; the schema is the explicit SIGNATURE.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE),
                artifacts={BUNDLE_ARTIFACT: str(staged)},
                signature=SIGNATURE,
                pip_requirements=pip_requirements(),  # given: inferring them would load the model in a subprocess
                metadata=metadata,
            )
