"""Inference: turn a model bundle, a portrait and speech into a talking video (`animate.py`), with the audio
features computed exactly as training sees them (`features.py`)."""
