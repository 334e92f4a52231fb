"""wav2vec2 audio features aligned to video frames.

`AudioEncoder.encode` turns 16 kHz mono audio into `[n_frames, tokens_per_frame, hidden]`: the model's
~50 Hz hidden states, linearly interpolated to `tokens_per_frame` evenly spaced instants inside each
video frame. The model is either a local wav2vec2 checkpoint directory (wan profile) or a tiny randomly
initialised config with a fixed seed (toy profile); nothing is ever downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from components.config import AudioEncoderConfig, Wav2Vec2Tiny

SAMPLE_RATE = 16_000


def tiny_wav2vec2(tiny: Wav2Vec2Tiny) -> Wav2Vec2Model:
    """A small random wav2vec2 whose weights depend only on `tiny` (the global RNG is left untouched)."""
    config = Wav2Vec2Config(
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        intermediate_size=tiny.intermediate_size,
        conv_dim=(tiny.conv_dim,) * 7,  # keep the standard 7-layer conv stack: 320-sample hop, 400-sample field
        num_conv_pos_embeddings=tiny.conv_pos_kernel,
        num_conv_pos_embedding_groups=tiny.conv_pos_groups,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.seed)
        return Wav2Vec2Model(config)


def _load_pretrained(path: Path) -> tuple[Wav2Vec2Model, Wav2Vec2FeatureExtractor]:
    config_file = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: audio encoder checkpoint directory not found")
    if not config_file.is_file():
        raise ValueError(f"{path}: not a wav2vec2 checkpoint (no config.json)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file}: unreadable config.json ({exc})") from exc
    if model_type != "wav2vec2":
        raise ValueError(f"{path}: not a wav2vec2 checkpoint (model_type={model_type!r})")
    try:
        model = Wav2Vec2Model.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: could not load wav2vec2 weights: {exc}") from exc
    if (path / "preprocessor_config.json").is_file():
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(path, local_files_only=True)
    else:  # a bare model directory: use the standard wav2vec2 preprocessing
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True)
    return model, extractor


class AudioEncoder:
    """One wav2vec2 model in eval mode, reused for every clip."""

    def __init__(self, cfg: AudioEncoderConfig):
        self.cfg = cfg
        if cfg.pretrained_path is not None:
            self.model, self.extractor = _load_pretrained(Path(cfg.pretrained_path))
        else:
            self.model = tiny_wav2vec2(cfg.tiny)
            self.extractor = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True)
        self.device = torch.device(cfg.device)
        if self.device.type == "cpu":  # a half-precision checkpoint would be slow (or unsupported) on CPU
            self.model.float()
        self.model.eval().to(self.device)
        conv = self.model.config
        # Output frame i sees samples [hop*i, hop*i + field): the conv stack's total stride and receptive field.
        self.hop = int(np.prod(conv.conv_stride))
        field = 1
        for kernel, stride in reversed(list(zip(conv.conv_kernel, conv.conv_stride))):
            field = (field - 1) * stride + kernel
        self.field = field

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def save_pretrained(self, path: str | Path) -> None:
        """Write model + preprocessor so `AudioEncoderConfig(pretrained_path=path)` loads the same encoder."""
        self.model.save_pretrained(path)
        self.extractor.save_pretrained(path)

    def hidden_states(self, audio_16k: np.ndarray) -> np.ndarray:
        """Raw wav2vec2 hidden states [n_steps, hidden] at one step per `hop` samples.

        Long audio runs in chunks with `chunk_context_s` of extra audio on both sides, so each kept
        step still sees the surrounding context; chunk starts are multiples of `hop`, so steps line up exactly.
        """
        audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
        if audio.size < self.field:  # wav2vec2 needs at least one receptive field
            audio = np.pad(audio, (0, self.field - audio.size))
        # Normalise over the whole clip once, so chunking does not change the input scale.
        values = self.extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_values[0]
        values = values.astype(np.float32)
        n_steps = (values.size - self.field) // self.hop + 1

        chunk = max(1, int(self.cfg.chunk_s * SAMPLE_RATE) // self.hop)  # steps kept per chunk
        context = int(self.cfg.chunk_context_s * SAMPLE_RATE) // self.hop
        pieces = []
        with torch_threads(self.cfg.threads), torch.no_grad():
            for start in range(0, n_steps, chunk):
                stop = min(start + chunk, n_steps)
                lo = max(0, start - context)
                hi = min(n_steps, stop + context)
                x = torch.from_numpy(values[lo * self.hop : (hi - 1) * self.hop + self.field])[None]
                h = self.model(x.to(self.device)).last_hidden_state[0]
                pieces.append(h[start - lo : stop - lo].float().cpu().numpy())
        return np.concatenate(pieces, axis=0)

    def encode(self, audio_16k: np.ndarray, n_frames: int, fps: int | float) -> np.ndarray:
        """float32 [n_frames, tokens_per_frame, hidden]: token j of frame k sits at (k + (j + 0.5) / tpf) / fps s."""
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        states = self.hidden_states(audio_16k)
        # Step i summarises samples [hop*i, hop*i + field): its centre time.
        step_t = (np.arange(states.shape[0]) * self.hop + self.field / 2) / SAMPLE_RATE
        tpf = self.cfg.tokens_per_frame
        token_t = (np.arange(n_frames * tpf) + 0.5) / (tpf * fps)
        out = _interp_rows(token_t, step_t, states)
        return out.reshape(n_frames, tpf, states.shape[1]).astype(np.float32)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads (0 = leave torch's setting), restoring the previous count after."""
    previous = torch.get_num_threads()
    if n > 0 and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _interp_rows(t: np.ndarray, t_src: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Linear interpolation of every column of `rows` (sampled at increasing t_src) at times t, clamped at the ends."""
    if rows.shape[0] == 1:
        return np.repeat(rows, t.size, axis=0)
    t = np.clip(t, t_src[0], t_src[-1])
    right = np.clip(np.searchsorted(t_src, t, side="right"), 1, t_src.size - 1)
    left = right - 1
    w = ((t - t_src[left]) / (t_src[right] - t_src[left]))[:, None]
    return (1.0 - w) * rows[left] + w * rows[right]
