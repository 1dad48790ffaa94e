//! The one integration-test binary (see STYLE.md §8).

mod cli;
mod store;
mod support;
