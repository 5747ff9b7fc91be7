"""The procedural scene world, the training of the shipped scene models on it, and world-only metrics."""
