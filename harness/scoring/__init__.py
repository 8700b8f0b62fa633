"""Per-item records and metrics from the engine's outputs (no torch): answer extraction, companions, aggregates."""
