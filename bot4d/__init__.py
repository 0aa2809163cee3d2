"""bot4d: a low-latency crypto trading engine daemon."""

__version__ = "0.1.0"
