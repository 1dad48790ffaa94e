//! The one integration-test binary (see STYLE.md §8).

mod admin_listen;
mod api;
mod api_support;
mod apikeys;
mod attenuate;
mod cli;
mod compact;
mod crash;
mod dns;
mod dns_abuse;
mod dns_tcp;
mod edge;
mod edge_api;
mod fastpath;
mod flow;
mod gateway;
mod incremental;
mod lifecycle;
mod ops;
mod outage;
mod replicas;
mod store;
mod support;
mod tls;
mod views;
