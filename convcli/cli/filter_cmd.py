"""`convcli filter` (placeholder module until the engine lands)."""
