//! The control channel of a running monitor: a Unix socket in `<home>/run` (0600, inside a 0700 directory),
//! so only the monitor's own user can ask it anything.
//!
//! Protocol: the client sends one JSON line `{"command":"status"}`; the monitor answers one JSON line and
//! closes. Unknown commands get `{"error": ...}`. Requests are capped at [`MAX_REQUEST_BYTES`] and a slow
//! client is dropped after [`IO_TIMEOUT`].

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Largest request line accepted.
pub const MAX_REQUEST_BYTES: u64 = 4096;
/// How long one request/answer may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the control socket at `path` (replacing a leftover socket file) with mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests on `listener` until the task is dropped; `status` is called for each status request.
pub async fn serve(listener: UnixListener, status: Arc<dyn Fn() -> Value + Send + Sync>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let status = status.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, status)).await;
        });
    }
}

async fn answer(stream: UnixStream, status: Arc<dyn Fn() -> Value + Send + Sync>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES)).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(v) if v["command"] == "status" => status(),
        Ok(v) => json!({"error": format!("unknown command {}", v["command"])}),
        Err(_) => json!({"error": "expected one JSON line like {\"command\":\"status\"}"}),
    };
    let mut bytes = reply.to_string().into_bytes();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Asks the monitor at `path` for its status.
pub async fn query_status(path: &Path) -> io::Result<Value> {
    let go = async {
        let mut stream = UnixStream::connect(path).await?;
        stream.write_all(b"{\"command\":\"status\"}\n").await?;
        let mut buf = Vec::new();
        stream.take(16 * 1024 * 1024).read_to_end(&mut buf).await?;
        serde_json::from_slice::<Value>(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    tokio::time::timeout(IO_TIMEOUT, go)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control socket timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_round_trip_and_private_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("control.sock");
        fs::write(&path, b"leftover").unwrap();
        let listener = bind(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let task = tokio::spawn(serve(listener, Arc::new(|| json!({"connections": 3}))));
        assert_eq!(query_status(&path).await.unwrap(), json!({"connections": 3}));

        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"command\":\"reboot\"}\n").await.unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        assert!(buf.contains("unknown command"), "{buf}");

        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"garbage\n").await.unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        assert!(buf.contains("expected one JSON line"), "{buf}");
        task.abort();
    }

    #[tokio::test]
    async fn no_monitor_is_an_error_not_a_hang() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(query_status(&tmp.path().join("none.sock")).await.is_err());
    }
}
