//! The `sixpn` binary: a thin shell around [`sixpn::cli`].

fn main() {}
