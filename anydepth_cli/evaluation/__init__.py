"""Zero-shot depth evaluation against ground truth and data-quality scores for depth maps."""
