//! nsbox: start processes in fresh Linux namespaces.
//!
//! The core (this crate without the `python` feature) is plain Rust and tested with `cargo test`;
//! the `python` feature adds the pyo3 module `nsbox._nsbox` that the Python package wraps. Every module is
//! private: the Python glue is the one user of the core.
//!
//! The path of a box, one module per hop: `py` (the call from Python) → `spec` (options checked once) →
//! `spawn` (a spawner thread, the pipes, the clone) → `child` (raw system calls in the child) → `execve`.

// Without the Python glue the core's only users are its own tests (`cargo test`).
#![cfg_attr(not(feature = "python"), allow(dead_code, unused_imports))]

mod capabilities;
mod cgroup;
mod child;
mod enter;
mod errors;
mod fork;
mod fork_id;
mod helper;
mod idmap;
mod mounts;
mod namespace;
mod net;
mod persist;
mod procfs;
mod protocol;
mod rlimits;
mod seccomp;
mod spawn;
mod spec;
mod sys;
mod tty;

#[cfg(feature = "python")]
mod py;
