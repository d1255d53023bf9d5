"""Experiments built from whole pipelines: several generators at once (multigen), scarce real data."""
