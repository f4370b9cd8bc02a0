"""TODO: module docstring."""
