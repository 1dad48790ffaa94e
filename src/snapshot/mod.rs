//! snapshot (placeholder, being written).
