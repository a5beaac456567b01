"""Exporting networks for other runtimes."""
