"""Camera capture nodes publishing sensor_msgs/Image and CameraInfo with capture timestamps."""
