"""Platform connectors (vSphere, Hyper-V, agent hosts): discovery, snapshots, changed areas and disk reads.

Django-free: plain dataclasses in and out (an import-linter contract enforces it).
"""
