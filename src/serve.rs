//! serve (placeholder, being written).
