"""Explanations: pure per-pixel scores, their statistics (fed block by block) and the HTML report."""
