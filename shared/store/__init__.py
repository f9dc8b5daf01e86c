"""Table Storage: the only code that knows tables, keys and ETags (ledger, lineage, business-event log)."""
