"""Cameras, intrinsics and point clouds from depth maps."""
