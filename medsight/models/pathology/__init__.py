"""Pathology classifier (placeholder while the package is written)."""
