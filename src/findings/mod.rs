//! Findings: the record of CONTRACT §4, and reading the log back.

pub mod reader;
