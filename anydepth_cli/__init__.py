"""anydepth-cli: relative depth maps with AnyDepth's Simple Depth Transformer."""

__version__ = "0.1.0"
