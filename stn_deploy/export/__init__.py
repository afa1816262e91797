"""ONNX export: grid-sample lowerings and the graph helper they share (numpy + onnx, no torch).

Import the submodules directly: ``stn_deploy.export.graph``, ``stn_deploy.export.portable``.
"""
