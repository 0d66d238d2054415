"""Widgets of the MTL Explain plugin."""
