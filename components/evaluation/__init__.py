"""Evaluation: metrics on generated and reconstructed video (mouth opening, lip sync, ...)."""
