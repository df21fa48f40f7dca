"""Launch files, node graph declarations and the simulated end-to-end demo for the Koch v1.1 arm."""
