"""Processing provider and algorithms of MTL Explain (Predict, Explain, Train), sharing the panel's core code."""
