"""One module per verb: plan, take the lock, record every step in the oplog, run (or print with --dry-run)."""
