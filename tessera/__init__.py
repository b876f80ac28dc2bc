"""Tessera: GPU-aware batch job queue scheduler for Kubernetes."""

__version__ = "0.1.0"
