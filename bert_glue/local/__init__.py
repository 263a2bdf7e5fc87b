"""A run on this machine, no cluster: the Trainer in local mode, grids, progress."""
