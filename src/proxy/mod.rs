//! The proxy: listener, proxy auth, CONNECT, MITM ([`tls`]) and forwarding.
pub mod tls;
