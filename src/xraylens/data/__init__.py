"""Chest X-ray data: labels, image reading, the paper's preprocessing, datasets and splits."""

from xraylens.data.labels import PAPER_LABELS

__all__ = ["PAPER_LABELS"]
