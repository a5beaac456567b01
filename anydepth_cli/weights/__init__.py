"""Getting weights: Hub download and cache, checkpoint files in every published key layout, choosing weights
from command-line arguments, and strict loading into a network built by `models`."""
