"""Scoring: virality scores and the fixed evaluation splits."""
