"""Monitors: read-only observers of a running daemon. They import ``ipc`` and never ``bot4d``'s
daemon code, map every segment PROT_READ, and poll at human rates, so they cannot block, slow or
corrupt the daemon."""
