"""Ingest: raw clips and metadata become the ``clips`` manifest and ``rejections``."""
