//! nsbox: start processes in fresh Linux namespaces.
//!
//! The core (this crate without the `python` feature) is plain Rust and tested with `cargo test`;
//! the `python` feature adds the pyo3 module `nsbox._nsbox` that the Python package wraps.

pub mod child;
pub mod enter;
pub mod errors;
pub mod fork;
pub mod fork_id;
mod helper;
pub mod idmap;
pub mod namespace;
pub mod netlink;
pub mod network;
pub mod persist;
pub mod procfs;
pub mod protocol;
pub mod spawn;
pub mod spawner;
pub mod spec;
mod stack;
pub mod sys;

#[cfg(feature = "python")]
mod py;
