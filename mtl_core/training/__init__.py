"""Training: datasets and samplers, losses, the training loop, the error-model fit and ONNX export (PyTorch)."""
