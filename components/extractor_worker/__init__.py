"""Programs that run in their own interpreter (the extractor env), called by components/data/extractor_client.py."""
