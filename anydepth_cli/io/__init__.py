"""Reading input photos and writing depth maps (colour PNG, 16-bit PNG, .npy)."""
