"""The text encoder: the toy byte-level umT5 is frozen, deterministic and zero past each prompt; a Wan-style
checkpoint (umT5 + tokenizer) loads through the same class."""

import pytest
import torch

from components.config import PortraitModelConfig
from components.model.text_encoder import TextEncoder


def test_tiny_text_encoder_is_frozen_deterministic_and_padded():
    cfg = PortraitModelConfig.tiny().text
    enc = TextEncoder(cfg)
    emb = enc(["a person talking", "x" * 100])
    assert emb.shape == (2, cfg.max_length, cfg.d_model)
    n_tokens = len("a person talking") + 1  # bytes + end token
    assert emb[0, :n_tokens].abs().sum(-1).gt(0).all() and not emb[0, n_tokens:].any()
    assert emb[1].abs().sum(-1).gt(0).all()  # truncated to max_length
    assert torch.equal(emb, TextEncoder(cfg)(["a person talking", "x" * 100]))
    assert not any(p.requires_grad for p in enc.parameters())


def test_text_encoder_loads_a_wan_style_checkpoint(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tiny = TextEncoder(PortraitModelConfig.tiny().text)
    tiny.model.save_pretrained(tmp_path / "wan" / "text_encoder")
    words = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "person": 4}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(tmp_path / "wan" / "tokenizer")
    cfg = PortraitModelConfig.tiny().text.model_copy(update={"pretrained_path": str(tmp_path / "wan"), "max_length": 6})
    loaded = TextEncoder(cfg)
    emb = loaded(["a person", "person a a"])
    ids = torch.tensor([[3, 4, 0, 0, 0, 0], [4, 3, 3, 0, 0, 0]])
    expected = tiny.model(ids, attention_mask=(ids > 0).long()).last_hidden_state * (ids > 0)[..., None]
    torch.testing.assert_close(emb, expected)
    with pytest.raises(FileNotFoundError, match="no tokenizer/"):
        TextEncoder(cfg.model_copy(update={"pretrained_path": str(tmp_path / "wan" / "text_encoder")}))
