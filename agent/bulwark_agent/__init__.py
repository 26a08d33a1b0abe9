"""Bulwark's agent for physical hosts."""

__version__ = "0.1.0"
