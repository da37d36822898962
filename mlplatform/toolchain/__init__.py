"""Pinned tools built from Go modules, cached outside the repository."""
