"""ragline: retrieval-augmented generation, offline by default."""

__version__ = "0.1.0"

