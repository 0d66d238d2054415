"""The Processing provider of MTL Explain and its algorithms, one family a file over a shared base (``base``): Predict
and Explain (``run``), Train (``train``) and Propose sites to label (``sites``), sharing the panel's core code."""
