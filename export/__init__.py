"""torch -> ONNX export. Writes the file contract declared in the torch-free `contract` package."""
