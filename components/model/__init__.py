"""Models: audio encoder, portrait backbone + conditioning, sampling."""
