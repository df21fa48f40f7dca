"""Shared ROS-free core: Koch robot model, config loading, resampler, safety limits, image codec, policy runtime."""
