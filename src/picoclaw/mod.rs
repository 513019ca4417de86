//! Everything specific to Picoclaw and the ClawSec family around it: reading the operator's Picoclaw files
//! into known secrets ([`secrets`], with the destination tables in [`providers`]), the `doctor` coverage
//! report ([`doctor`]), and the posture profile fragment for `picoclaw-security-guardian` ([`profile`]).

pub mod doctor;
pub mod profile;
pub mod providers;
pub mod secrets;
