"""torch -> ONNX export. `export.contract` is torch-free and shared with the service."""
