"""Restore requests: files, folders and whole machines, with approval and live progress."""
