"""Checkpoints found, resumed and loaded back; a GLUE experiment's trials collected."""
