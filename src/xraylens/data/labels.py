"""The paper's label space."""

from __future__ import annotations

#: The 14 labels of Chatterjee et al., in the paper's order.
PAPER_LABELS: tuple[str, ...] = (
    "ARDS",
    "Bacterial Pneumonia",
    "COVID-19",
    "Chlamydophila",
    "Fungal Pneumonia",
    "Klebsiella",
    "Legionella",
    "MERS",
    "No Finding",
    "Pneumocystis",
    "Pneumonia",
    "SARS",
    "Streptococcus",
    "Viral Pneumonia",
)
