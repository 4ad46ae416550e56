"""Small helpers with no deepsweep dependency: atomic files and folder locks (io), retries (retry), the machine (machine)."""
