import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from components.config import VaeConfig
from components.model.bundle import (
    BUNDLE_FILE,
    BundleAudio,
    BundleError,
    ModelBundle,
    find_bundle_dir,
    load_plain_bundle,
    resolve_model_uri,
    save_bundle,
)
from components.model.vae import build_vae, decode_latents

T, T_LAT, Z, HW = 17, 5, 16, 8


@pytest.fixture(scope="module")
def saved(tmp_path_factory, make_tiny_bundle) -> tuple[ModelBundle, Path]:
    bundle = make_tiny_bundle()
    return bundle, save_bundle(tmp_path_factory.mktemp("b") / "bundle", bundle)


def inputs(bundle: ModelBundle, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    acfg = bundle.model.cfg.modulation.audio
    return {
        "noisy_latents": torch.randn(1, Z, T_LAT, HW, HW, generator=g),
        "timestep": torch.tensor([600.0]),
        "cond_latents": torch.randn(1, Z, T_LAT, HW, HW, generator=g),
        "audio_feats": torch.randn(1, T, acfg.tokens_per_frame, acfg.in_dim, generator=g),
        "pose": torch.rand(1, T, 10, 3, generator=g) if bundle.model.cfg.modulation.skeleton.enabled else None,
        "text_emb": bundle.text_encoder(["a person talking"]),
    }


def assert_same_outputs(a: ModelBundle, b: ModelBundle) -> None:
    # The weights come back bit for bit; outputs agree to float rounding (a loaded tensor's memory layout can
    # make the CPU backend pick another kernel: with one thread, outputs differed in the last bit).
    for part in ("model", "vae"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part
    x = inputs(a)
    close = lambda p, q: torch.testing.assert_close(p, q, rtol=0, atol=1e-5)  # noqa: E731
    with torch.no_grad():
        close(a.model(**x), b.model(**{**x, "text_emb": b.text_encoder(["a person talking"])}))
        lat = torch.randn(1, Z, 2, HW, HW, generator=torch.Generator().manual_seed(3))
        close(decode_latents(a.vae, lat), decode_latents(b.vae, lat))
    assert torch.equal(a.text_encoder(["héllo"]), b.text_encoder(["héllo"]))


def test_round_trip_gives_identical_outputs(saved):
    bundle, path = saved
    loaded = load_plain_bundle(path)
    assert loaded.path == path.resolve()
    assert loaded.meta == bundle.meta
    assert loaded.meta.lineage == {"run_id": "abc", "phase": "phase1"}
    assert loaded.vae.config.latents_mean == bundle.vae.config.latents_mean  # pretrain's statistics travel along
    assert_same_outputs(bundle, loaded)
    audio = torch.randn(16000, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    assert bundle.audio_encoder is not None  # save_bundle built the ingest's encoder and saved it
    assert (loaded.audio_encoder.encode(audio, 25, 25) == bundle.audio_encoder.encode(audio, 25, 25)).all()


def test_bundle_json_is_complete_and_weights_are_safetensors(saved):
    _, path = saved
    meta = json.loads((path / BUNDLE_FILE).read_text())
    assert meta["format"] == "talkalign-bundle-v1"
    assert (meta["fps"], meta["resolution"], meta["frames"], meta["sample_rate"]) == (25, 64, 17, 16000)
    assert meta["audio"]["features"] == "wav2vec" and meta["audio"]["tokens_per_frame"] == 2
    assert meta["audio"]["wav2vec"]["tiny"]["hidden_size"] == 32
    assert meta["sampling"] == {"steps": 3, "shift": 3.0, "audio_guidance": 2.0, "seed": 0}
    weights = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.safetensors"))
    assert weights == [
        "audio_encoder/model.safetensors",
        "modulation.safetensors",
        "text_encoder/model.safetensors",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert not [p for p in path.rglob("*") if p.suffix in {".bin", ".pt", ".pkl"}]


def test_mel_bundle_with_skeleton_round_trip(tmp_path, make_tiny_bundle):
    bundle = make_tiny_bundle("mel", skeleton=True)
    path = save_bundle(tmp_path / "mel", bundle)
    assert not (path / "audio_encoder").exists()  # mel needs no encoder
    loaded = load_plain_bundle(path)
    assert loaded.audio_encoder is None
    assert loaded.meta.audio == BundleAudio(features="mel", n_mels=40, tokens_per_frame=4)
    assert_same_outputs(bundle, loaded)


def test_save_replaces_atomically_and_refuses_misfits(tmp_path, make_tiny_bundle):
    make_bundle = make_tiny_bundle
    target = tmp_path / "bundle"
    save_bundle(target, make_bundle())
    save_bundle(target, make_bundle())  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp or old dirs left behind
    before = (target / BUNDLE_FILE).read_text()

    misfit = make_bundle()
    misfit.meta = misfit.meta.model_copy(update={"audio": BundleAudio(features="mel", n_mels=40, tokens_per_frame=4)})
    with pytest.raises(BundleError, match=r"mel features are 4 x 40 per frame, the audio modulation expects 2 x 32"):
        save_bundle(target, misfit)
    small_vae = make_bundle()
    small_vae.vae = build_vae(VaeConfig(z_dim=8))
    with pytest.raises(BundleError, match="VAE has 8 latent channels, the model expects 16"):
        save_bundle(target, small_vae)
    for clash in ({BUNDLE_FILE: b"{}"}, {"vae": b""}, {"../outside.json": b""}):
        with pytest.raises(BundleError, match="extra files"):
            save_bundle(target, make_bundle(), extra_files=clash)
    assert (target / BUNDLE_FILE).read_text() == before  # the good bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_extra_files_are_saved_inside_the_bundle(tmp_path, make_tiny_bundle):
    path = save_bundle(tmp_path / "bundle", make_tiny_bundle("mel"), extra_files={"notes.json": b'{"a": 1}'})
    assert json.loads((path / "notes.json").read_text()) == {"a": 1}
    assert load_plain_bundle(path).meta.variant == "tiny-mel"  # a part the plain loader does not know is left alone


def copy_of(path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(path, tmp_path / "copy"))


def test_load_errors_name_the_problem(saved, tmp_path):
    _, path = saved
    with pytest.raises(BundleError, match="nowhere: no such file or directory"):
        load_plain_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="empty: not a talkalign model"):
        load_plain_bundle(tmp_path / "empty")
    (tmp_path / "file.bin").write_bytes(b"\0" * 10)
    with pytest.raises(BundleError, match="not a talkalign model"):
        load_plain_bundle(tmp_path / "file.bin")

    bad = copy_of(path, tmp_path)
    meta = json.loads((bad / BUNDLE_FILE).read_text())
    (bad / BUNDLE_FILE).write_text(json.dumps({**meta, "format": "other-v9"}))
    with pytest.raises(BundleError, match=r"bundle.json: not a talkalign bundle \(format 'other-v9'"):
        load_plain_bundle(bad)
    (bad / BUNDLE_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="bundle.json: not valid JSON"):
        load_plain_bundle(bad)
    (bad / BUNDLE_FILE).write_text(json.dumps({**meta, "frames": 16}))
    with pytest.raises(BundleError, match="frames must be 4k\\+1"):
        load_plain_bundle(bad)
    (bad / BUNDLE_FILE).write_text(json.dumps(meta))

    shutil.rmtree(bad / "vae")
    with pytest.raises(BundleError, match=r"incomplete bundle, missing vae/config.json"):
        load_plain_bundle(bad)
    shutil.copytree(path / "vae", bad / "vae")
    (bad / "audio_encoder" / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"missing audio_encoder/\*.safetensors"):
        load_plain_bundle(bad)
    shutil.copy(path / "audio_encoder" / "model.safetensors", bad / "audio_encoder")
    (bad / "transformer" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BundleError, match=r"refusing pickle-format weight files \['transformer/pytorch_model.bin'\]"):
        load_plain_bundle(bad)
    (bad / "transformer" / "pytorch_model.bin").unlink()
    assert load_plain_bundle(bad).meta.variant == "tiny-wav2vec"  # repaired: loads again


def test_load_errors_on_shape_mismatch(saved, tmp_path):
    _, path = saved
    bad = copy_of(path, tmp_path)
    # Modulation weights of a wider model: the tensors no longer fit the layers.
    tensors = {}
    from safetensors import safe_open

    with safe_open(str(path / "modulation.safetensors"), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            widened = name.startswith("motion.audio.project.proj")
            tensors[name] = torch.zeros(t.shape[0] + 1, *t.shape[1:]) if widened else t
    save_file(tensors, str(bad / "modulation.safetensors"))
    with pytest.raises(BundleError, match=r"cannot load bundle: .*motion.audio.project.proj.* has shape"):
        load_plain_bundle(bad)

    other = copy_of(path, tmp_path / "x")
    meta = json.loads((other / BUNDLE_FILE).read_text())
    meta["audio"]["wav2vec"]["tokens_per_frame"] = 3
    meta["audio"]["tokens_per_frame"] = 3
    (other / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"parts do not fit together: wav2vec features are 3 x 32 per frame"):
        load_plain_bundle(other)


def test_finds_bundle_inside_mlflow_layouts(saved, tmp_path):
    _, path = saved
    model_dir = tmp_path / "pyfunc"
    shutil.copytree(path, model_dir / "artifacts" / "bundle")
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    assert find_bundle_dir(model_dir) == (model_dir / "artifacts" / "bundle").resolve()
    assert resolve_model_uri(str(model_dir)) == (model_dir / "artifacts" / "bundle").resolve()


PYFUNC_CODE = '''
import mlflow.pyfunc
from mlflow.models import set_model


class BundleModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str]) -> list[str]:
        return model_input


set_model(BundleModel())
'''


@pytest.mark.slow
def test_resolves_mlflow_registry_and_run_uris(saved, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    _, path = saved
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the run's artifacts go to ./mlruns here
    code = tmp_path / "bundle_model.py"
    code.write_text(PYFUNC_CODE)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(path), "bundle")
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"bundle": str(path)},
                registered_model_name="talkalign-test",
                pip_requirements=[],
            )
        MlflowClient(uri).set_registered_model_alias("talkalign-test", "champion", "1")
    finally:
        mlflow.set_tracking_uri(None)

    uris = ("models:/talkalign-test@champion", "models:/talkalign-test/1", f"runs:/{run.info.run_id}/bundle")
    for i, model_uri in enumerate(uris):
        local = resolve_model_uri(model_uri, tracking_uri=uri, dst_path=tmp_path / "download" / str(i))
        assert json.loads((local / BUNDLE_FILE).read_text())["variant"] == "tiny-wav2vec", model_uri
    assert load_plain_bundle("models:/talkalign-test@champion", tracking_uri=uri).meta.lineage["run_id"] == "abc"
    with pytest.raises(BundleError, match="models:/talkalign-test@nobody: cannot fetch from MLflow at sqlite"):
        resolve_model_uri("models:/talkalign-test@nobody", tracking_uri=uri)


def test_bundle_keeps_the_training_prompt_as_its_default():
    from components.config import Params, TrainingDataConfig
    from components.model.bundle import BundleMeta

    params = Params(data=TrainingDataConfig(prompt="a news anchor"))
    meta = BundleMeta.from_params(params, variant="x")
    assert meta.default_prompt == "a news anchor"
    assert BundleMeta.model_validate_json(meta.model_dump_json()).default_prompt == "a news anchor"
