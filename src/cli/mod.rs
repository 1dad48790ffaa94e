//! cli (placeholder, being written).
