//! Aggregation of request outcomes. (stub: being built)
