//! The one integration-test binary (see STYLE.md §8).

mod api;
mod api_support;
mod cli;
mod store;
mod support;
