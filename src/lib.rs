//! picoclaw-traffic-guardian: a local HTTP/HTTPS forward proxy that watches one Picoclaw gateway process.
//!
//! It detects secrets leaving (EXFIL), hostile text arriving (INJECTION) and risky destinations (EGRESS),
//! writes redacted JSONL findings, and never blocks or changes traffic. The modules follow the one flow of
//! the README's design section: [`config`] and [`home`] set the stage; [`cli`] is the thin shell over them.

pub mod cli;
pub mod config;
pub mod demo;
pub mod detect;
pub mod findings;
pub mod home;
pub mod inspect;
pub mod monitor;
pub mod picoclaw;
pub mod proxy;
pub mod scan;
