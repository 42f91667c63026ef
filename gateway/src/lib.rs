//! wasmgate: a Wasm-extensible HTTP ingress gateway on Pingora, configured by Kubernetes Gateway
//! API YAML from a watched directory.
//!
//! Layout: [`cli`] (flags), [`server`] (process, listeners, the Pingora proxy, error mapping),
//! [`routing`] (pure route matching), [`config`] (compiling the resources in force into one
//! immutable snapshot), [`reload`] (directory watch, last-good store, swap), [`backends`]
//! (addresses and load balancing), [`admin`] (ready/health/metrics/config_dump), [`metrics`],
//! [`access_log`], [`tls`], [`demo`], [`validate`].
//! [`plugins`] wires the Wasm runtime (`wasmgate-runtime`) and the fetcher (`wasmgate-fetcher`):
//! WasmPlugin chains are built per (port, rule, backend) in [`config::compile`], hang off
//! [`routing::Entry`], and run in [`server::proxy`].

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod limits;
pub mod metrics;
pub mod plugins;
pub mod reload;
pub mod routing;
pub mod server;
pub mod tls;
pub mod validate;
