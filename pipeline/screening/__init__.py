"""Screening: which ingested clips enter the dataset (cheap rules, then pixel rules)."""
