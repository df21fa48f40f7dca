"""Simulated Koch v1.1: Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal,
rendered scene, reach task and scripted expert."""
