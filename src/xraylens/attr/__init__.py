"""Attributor plugins and model surgery."""
