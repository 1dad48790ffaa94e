//! api (placeholder, being written).
