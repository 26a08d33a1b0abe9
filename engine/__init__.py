"""The data path: chunking, deduplication, encryption, repositories and storage back ends.

Django-free (an import-linter contract enforces it) so it also runs inside the agent and on proxies.
"""
