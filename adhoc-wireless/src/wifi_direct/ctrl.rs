//! wpa_supplicant's control interface: a unix datagram socket per interface
//! (`/var/run/wpa_supplicant/<iface>`), one request per datagram, one reply per request
//! (`OK`, `FAIL`, `UNKNOWN COMMAND`, or the data asked for), and — on a socket that sent
//! `ATTACH` — unsolicited events, one per datagram, each starting with its priority (`<3>`).
//!
//! The client binds its own socket path (the daemon replies to the sender's address), named
//! `thali-wpa-<pid>-<n>` in the chosen directory, and removes it when dropped. Replies and
//! events longer than [`MAX_LINE`] are refused (a datagram that fills the buffer is taken as
//! truncated). Requests are built only from checked parts (MAC addresses, interface names, the
//! plugin's own numbers) and refused if they hold a newline or a NUL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UnixDatagram;

use super::event::MAX_LINE;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::mdns::tcp::within;

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

/// One control socket, connected to one wpa_supplicant interface.
#[derive(Debug)]
pub struct CtrlSocket {
    socket: UnixDatagram,
    local: PathBuf,
    remote: PathBuf,
    /// One request at a time, so replies cannot be taken by the wrong caller.
    lock: tokio::sync::Mutex<()>,
}

impl CtrlSocket {
    /// Binds a fresh local socket in `local_dir` and connects it to `remote`. Must run inside
    /// a tokio runtime.
    pub fn open(remote: &Path, local_dir: &Path) -> Result<CtrlSocket> {
        let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let local = local_dir.join(format!("thali-wpa-{}-{n}", std::process::id()));
        // A stale socket of a dead process of the same pid.
        let _ = std::fs::remove_file(&local);
        let socket = UnixDatagram::bind(&local)
            .map_err(|e| Error::io(format!("binding {}", local.display()), e))?;
        let ctrl = CtrlSocket {
            socket,
            local,
            remote: remote.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
        };
        ctrl.socket.connect(remote).map_err(|e| {
            Error::io(
                format!("connecting to wpa_supplicant at {}", remote.display()),
                e,
            )
        })?;
        Ok(ctrl)
    }

    /// The daemon's socket.
    pub fn remote(&self) -> &Path {
        &self.remote
    }

    /// Sends `command` and returns the reply, skipping any event that arrives meanwhile (on
    /// an attached socket). Fails after `timeout_ms` without a reply.
    pub async fn request(
        &self,
        clock: &dyn Clock,
        timeout_ms: u64,
        command: &str,
    ) -> Result<String> {
        if command.is_empty() || command.len() > MAX_LINE || command.contains(['\n', '\r', '\0']) {
            return Err(Error::InvalidConfig(format!(
                "not a control request: {command:?}"
            )));
        }
        let _guard = self.lock.lock().await;
        let exchange = async {
            self.socket
                .send(command.as_bytes())
                .await
                .map_err(|e| Error::io(format!("sending {command}"), e))?;
            loop {
                match self.recv_line().await? {
                    Some(line) if super::event::strip_priority(&line).is_none() => {
                        return Ok(line);
                    }
                    // An event, or a datagram too long: not our reply.
                    _ => continue,
                }
            }
        };
        within(clock, timeout_ms, exchange)
            .await
            .unwrap_or_else(|| {
                Err(Error::Unreachable(format!(
                    "wpa_supplicant at {} did not answer {command} within {timeout_ms} ms",
                    self.remote.display()
                )))
            })
    }

    /// As [`request`](Self::request), and fails unless the reply is `OK`.
    pub async fn request_ok(
        &self,
        clock: &dyn Clock,
        timeout_ms: u64,
        command: &str,
    ) -> Result<()> {
        let reply = self.request(clock, timeout_ms, command).await?;
        if reply.trim_end() == "OK" {
            Ok(())
        } else {
            Err(refused(command, &reply))
        }
    }

    /// The next datagram as text: `None` when it was too long (dropped) or not UTF-8.
    pub async fn recv_line(&self) -> Result<Option<String>> {
        let mut buf = vec![0u8; MAX_LINE + 1];
        let n = self
            .socket
            .recv(&mut buf)
            .await
            .map_err(|e| Error::io("reading from wpa_supplicant", e))?;
        if n > MAX_LINE {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(String::from_utf8(buf).ok())
    }
}

impl Drop for CtrlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.local);
    }
}

/// The error for a request wpa_supplicant refused.
pub(super) fn refused(command: &str, reply: &str) -> Error {
    let reply: String = reply.trim_end().chars().take(80).collect();
    let verb = command.split(' ').next().unwrap_or(command);
    Error::Unreachable(format!("wpa_supplicant refused {verb}: {reply}"))
}
