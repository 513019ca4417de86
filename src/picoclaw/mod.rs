//! Everything specific to Picoclaw and the ClawSec family around it: the posture profile fragment for
//! `picoclaw-security-guardian`.

pub mod profile;
