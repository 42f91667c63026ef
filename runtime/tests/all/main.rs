//! Runtime tests: real wasmtime, hand-written `.wat` guests for every ABI edge, a fake host, no
//! sockets. One binary, one module per feature (as wasmtime's own `tests/all`).

mod support;

mod abi;
mod cache;
mod check;
mod concurrency;
mod failures;
mod figures;
mod hostcalls;
mod lifecycle;
mod limits;
