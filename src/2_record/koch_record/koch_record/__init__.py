"""Records live topics into rosbag2 (MCAP or sqlite3) episodes, byte-for-byte what ros2 bag record stores."""
