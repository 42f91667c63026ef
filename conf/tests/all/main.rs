//! Integration tests of wasmgate-conf, one binary (one link) for all of them.

mod golden;
mod kinds;
mod redaction;
mod references;
mod reload;
mod robustness;
mod support;
mod watch;
