"""`charter bench audit`: `charter audit verify` throughput against a raw scan of the events table."""
