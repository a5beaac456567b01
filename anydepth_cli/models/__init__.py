"""Networks: ViT encoders (DINOv2 and DINOv3 layouts), the SDT and DPT heads, the registry."""
