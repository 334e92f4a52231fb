"""Models, everything a saved model is made of: audio and text encoders, the VAE, the portrait backbone with its
motion modulation, LoRA adapters and the TLPO gate, the flow schedule and sampler, and bundles on disk."""
