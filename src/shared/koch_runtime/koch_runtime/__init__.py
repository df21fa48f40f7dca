"""The policy runtime training and the robot share (PyTorch or onnxruntime), its policy plugins, and
`lerobot_compat`, the one module that touches LeRobot internals. Import the submodules you need:
`factory.load_runtime`, `torch_runtime.PolicyRuntime`, `build.build_policy`, `onnx_runtime.OnnxRuntime`."""
