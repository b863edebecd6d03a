"""Model bundles, prediction API, ONNX and TorchScript export."""
