"""Passes: each a plain function from an artifact to a new artifact with its parity record."""
