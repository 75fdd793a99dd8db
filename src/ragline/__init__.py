"""ragline: retrieval-augmented generation, offline by default."""

__version__ = "0.1.0"

import os as _os

# NumPy's OpenBLAS threads spin after each product and starve PyTorch's threads on small
# CPUs: a query embedded right after a vector search took 22 ms instead of 9 (bench/README.md).
# The products ragline runs in NumPy are small; one thread does them fastest.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
