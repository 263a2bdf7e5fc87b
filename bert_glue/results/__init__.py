"""Checkpoints found, resumed and loaded back; their predictions; a GLUE experiment's trials
collected and reported."""
