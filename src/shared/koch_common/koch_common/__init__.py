"""Shared ROS-free core: Koch robot model, config loading, resampler, safety limits, image codec.

Light by design: it never imports torch, LeRobot or onnxruntime (the policy runtime is koch_runtime)."""
