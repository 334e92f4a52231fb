"""Speech of the synthetic world: the syllable fallback, and espeak-ng clips when it is installed."""

import numpy as np
import pytest

from components.config import WorldConfig
from components.data.synthetic import speech as speech_module
from components.data.synthetic.speech import espeak_available, make_speech
from components.data.synthetic.world import make_clip
from components.io.audio import rms_db

CFG = WorldConfig(n_identities=2, clips_per_identity=2, duration_s=2.0, speech="syllables", seed=7)


def test_auto_falls_back_to_syllables_without_espeak(monkeypatch):
    monkeypatch.setattr(speech_module, "espeak_available", lambda: False)
    speech = make_speech(np.random.default_rng(0), CFG.model_copy(update={"speech": "auto"}))
    assert speech.kind == "syllables" and len(speech.audio) == 32000
    with pytest.raises(RuntimeError, match="espeak-ng"):
        speech_module.espeak_speech(np.random.default_rng(0), 1.0, 16000)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed")
def test_espeak_speech_clip():
    cfg = CFG.model_copy(update={"speech": "espeak"})
    clip = make_clip(cfg, 0, 0)
    speech = clip.truth["speech"]
    assert speech["kind"] == "espeak" and len(speech["text"].split()) >= 3 and "+" in speech["voice"]
    assert len(clip.audio) == 32000 and rms_db(clip.audio) > -35
    mouth = np.array(clip.truth["mouth_open"])
    assert mouth.max() == 1.0 and (mouth > 0.5).mean() > 0.2 and (mouth < 0.1).any()
