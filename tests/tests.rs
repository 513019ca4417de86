//! The one integration test binary (one link step on a 2-core CI). Each module covers one feature area and
//! drives the real binary or real sockets on 127.0.0.1.

mod util;

mod check_config;
mod clients;
mod connect_tls;
mod doctor;
mod faults;
mod lifecycle;
mod mitm;
mod packaging;
mod profile;
mod proxy;
mod run;
mod scan;
mod start;
mod streaming;
mod threats;
mod tls;
mod websocket;
