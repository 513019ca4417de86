//! Lifecycle of a monitor: its run directory, lock and state file ([`state`]), the control socket
//! ([`control`]), the runner shared by `start` and `run` ([`run`]), background start and `stop`
//! ([`background`]), `status` ([`status`]), `run`'s child ([`child`]) and the proxy variables of `env`
//! ([`env`](mod@env)).

pub mod background;
pub mod child;
pub mod control;
pub mod env;
pub mod run;
pub mod state;
pub mod status;
