//! dns (placeholder, being written).
