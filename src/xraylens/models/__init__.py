"""Classifier plugins: the paper's five backbones, weight loading and adaptation."""
