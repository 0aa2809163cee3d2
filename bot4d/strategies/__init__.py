"""Strategies: numba kernels with a fixed signature for the hot path (see ``api``)."""
