"""Visualisation: overlays for greyscale X-rays, multi-panel figures, NAP grids."""
