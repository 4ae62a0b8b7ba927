"""PyTorch -> ONNX export and the parity check of every conversion."""
