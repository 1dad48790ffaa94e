//! gateway (placeholder, being written).
