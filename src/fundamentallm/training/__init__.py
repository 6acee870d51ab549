"""Training: the one loop (`loop.train`) and the pieces it is built from."""
