"""The bot4d daemon: configuration in, shards and the io thread running (see app.py)."""
