"""Networks: ViT encoders (DINOv2 and DINOv3 layouts), the SDT and DPT heads, the registry."""

from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork, build_network

__all__ = ["DepthNetwork", "NetworkConfig", "build_network"]
