"""Shared-memory contract between the bot4d daemon, its sidecar and monitors.

This package imports nothing of ``bot4d``: monitors and the sidecar depend on it alone.
"""
