"""The ledger on disk: the LevelDB store and its invariants, full verification, the
export format, and the ledger operations of the control API."""
