"""bot4d-persist: the sidecar that drains the journal rings into PostgreSQL."""
