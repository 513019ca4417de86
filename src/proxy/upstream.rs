//! Opening a TCP connection to an upstream: `resolve` pins first, then IP literals, then DNS; refuse the
//! proxy's own address; EGRESS rules on the address actually connected to; `TCP_NODELAY` on.

use std::net::{IpAddr, SocketAddr};

use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::error::{chain, ProxyError};
use super::Shared;
use crate::detect::{egress, Destination, Direction};
use crate::findings::{Finding, Origin};

/// Connects to `dest` for a client at `source`, reporting EGRESS findings for the address it connected to
/// (or, when every attempt failed, the first address it tried: the attempt is what matters).
pub async fn connect(
    shared: &Shared,
    dest: &Destination,
    source: IpAddr,
    protocol: &'static str,
) -> Result<TcpStream, ProxyError> {
    let deadline = Instant::now() + shared.settings.connect_timeout;
    let addrs = resolve(shared, dest, deadline).await?;
    if addrs.iter().any(|a| shared.is_self(*a)) {
        return Err(ProxyError::Loop(dest.clone()));
    }
    let origin = Origin { direction: Direction::Outbound, protocol, source, dest: dest.clone() };
    let mut last_err = None;
    for addr in &addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let ip = stream.peer_addr().map_or(addr.ip(), |a| a.ip());
                report_egress(shared, &origin, ip);
                // Small writes (SSE tokens) must go out at once.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => {
                report_egress(shared, &origin, addrs[0].ip());
                return Err(ProxyError::ConnectTimeout(dest.clone()));
            }
        }
    }
    if let Some(first) = addrs.first() {
        report_egress(shared, &origin, first.ip());
    }
    let why = last_err.map_or_else(|| "no address".to_owned(), |e| chain(&e));
    Err(ProxyError::Connect(dest.clone(), why))
}

async fn resolve(shared: &Shared, dest: &Destination, deadline: Instant) -> Result<Vec<SocketAddr>, ProxyError> {
    if let Some(ip) = shared.settings.resolve.get(&dest.host) {
        return Ok(vec![SocketAddr::new(*ip, dest.port)]);
    }
    if let Ok(ip) = dest.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, dest.port)]);
    }
    match timeout_at(deadline, tokio::net::lookup_host((dest.host.as_str(), dest.port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(ProxyError::Resolve(dest.clone(), "no addresses".into()))
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(ProxyError::Resolve(dest.clone(), chain(&e))),
        Err(_) => Err(ProxyError::ConnectTimeout(dest.clone())),
    }
}

/// Records the EGRESS findings for a destination reached at `ip`.
pub fn report_egress(shared: &Shared, origin: &Origin, ip: IpAddr) {
    for d in egress::check(&origin.dest, Some(ip), &shared.settings.egress_allow) {
        shared.sink.record(Finding::new(&d, origin, OffsetDateTime::now_utc()));
    }
}
