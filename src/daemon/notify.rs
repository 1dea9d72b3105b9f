//! `sd_notify`: the datagrams that tell systemd the daemon is ready, stopping, or alive.

use std::time::Duration;

/// Sends `sd_notify` messages to systemd, or nothing when not started by it. Built by the entry
/// point from `NOTIFY_SOCKET` and `WATCHDOG_USEC`.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<std::path::PathBuf>,
    /// Ping interval requested by systemd (`WatchdogSec=`); pinged at half of it.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    pub fn new(socket: Option<std::path::PathBuf>, watchdog: Option<Duration>) -> Notifier {
        Notifier { socket, watchdog }
    }

    /// One datagram (`READY=1`, `STATUS=...`); errors are logged, never fatal: the daemon must
    /// work without systemd.
    pub fn notify(&self, msg: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send_datagram(path, msg) {
            tracing::warn!(event = "sd_notify_failed", error = %e);
        }
    }
}

#[cfg(unix)]
fn send_datagram(path: &std::path::Path, msg: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let text = path.to_string_lossy();
    #[cfg(target_os = "linux")]
    if let Some(name) = text.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
        return Ok(());
    }
    sock.send_to(msg.as_bytes(), path)?;
    Ok(())
}

#[cfg(not(unix))]
fn send_datagram(_: &std::path::Path, _: &str) -> std::io::Result<()> {
    Ok(())
}
