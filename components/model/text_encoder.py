"""The frozen prompt encoder: umT5 from a local Wan checkpoint, or a tiny random umT5 over UTF-8 bytes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from components.config import TextEncoderConfig
from components.model.precision import torch_dtype
from components.model.vae import resolve_component_dir


class TextEncoder(nn.Module):
    """Frozen prompt encoder -> [B, max_length, d_model], zero past each prompt's end (as the Wan pipeline pads).

    Wan profile: umT5 + tokenizer from a local Wan checkpoint. Toy profile: a tiny random umT5 over UTF-8 bytes
    (ids: 0 pad, 1 end, byte + 3), so both profiles run the same transformers class.
    """

    PAD, EOS, BYTE_OFFSET = 0, 1, 3

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        # transformers is slow to import; only the text encoder needs it here.
        from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

        self.max_length = cfg.max_length
        self.tokenizer = None
        if cfg.pretrained_path is not None:
            root, subfolder = resolve_component_dir(cfg.pretrained_path, "text_encoder")
            tok_dir = Path(cfg.pretrained_path) / "tokenizer"
            if not tok_dir.is_dir():
                raise FileNotFoundError(f"{cfg.pretrained_path}: no tokenizer/ directory next to the text encoder")
            self.model = UMT5EncoderModel.from_pretrained(root, subfolder=subfolder, local_files_only=True,
                                                          dtype=torch_dtype(cfg.dtype))
            self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        else:
            config = UMT5Config(
                vocab_size=256 + self.BYTE_OFFSET,
                d_model=cfg.d_model,
                d_kv=cfg.d_model // cfg.num_heads,
                d_ff=cfg.d_ff,
                num_layers=cfg.num_layers,
                num_heads=cfg.num_heads,
                relative_attention_num_buckets=8,
                pad_token_id=self.PAD,
                eos_token_id=self.EOS,
                decoder_start_token_id=self.PAD,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model = UMT5EncoderModel(config)
        self.model.requires_grad_(False).eval()

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is not None:
            out = self.tokenizer(
                prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            )
            return out.input_ids, out.attention_mask
        ids = torch.full((len(prompts), self.max_length), self.PAD, dtype=torch.long)
        for row, text in enumerate(prompts):
            tokens = [b + self.BYTE_OFFSET for b in text.encode("utf-8")][: self.max_length - 1] + [self.EOS]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != self.PAD).long()

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        hidden = self.model(ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        return (hidden * mask.to(device)[..., None]).float()  # float32 at the boundary: a bf16 encoder meets fp32 sampling
