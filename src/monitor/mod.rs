//! Lifecycle of a monitor: its run directory, lock and state file, and whether one is running.

pub mod control;
pub mod state;
