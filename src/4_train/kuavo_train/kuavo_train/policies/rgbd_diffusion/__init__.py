"""RGB+Depth diffusion policy, registered with LeRobot as policy type `rgbd_diffusion`."""
