"""voxcart."""
