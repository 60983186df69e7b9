"""Downloading public training data (`ml.fetch.hpa`: the HPA Cell Atlas fields of a labels table)."""
