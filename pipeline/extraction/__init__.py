"""Extraction: the per-clip loop over the registered modalities, and its one driver."""
