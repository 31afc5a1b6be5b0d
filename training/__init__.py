"""Offline training: box-annotated smears -> Keras UNet -> verified ONNX model in models/."""
