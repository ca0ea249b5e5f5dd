//! The host's side of the admin socket.
//!
//! The socket is made at start and removed at exit. A file already at its
//! path is a stale socket (replaced) unless a live host answers on it; then
//! this host warns and runs without one: two hosts in one working directory
//! need their own `-P zilla.engine.admin.socket`, and neither fails to start.
//! Only the host's own user may connect (`SO_PEERCRED`; the file is 0600
//! too): the commands end sessions and copy their bytes, passwords included
//! with `--unredacted`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zilla_engine::admin::{self, glob_matches, tap};

use super::pcap::{self, Streams};
use super::{DumpSummary, Request};

/// Segments a dump queues for its reader before it drops.
const DUMP_QUEUE: usize = 4096;
/// Bytes a dump queues for its reader before it drops.
const DUMP_BUDGET: usize = 4 * 1024 * 1024;
/// The longest request line read.
const MAX_REQUEST: usize = 64 * 1024;

/// The open socket; removed when dropped, if it is still ours.
#[derive(Debug)]
pub(crate) struct AdminSocket {
    path: PathBuf,
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        // Another host may have replaced it since (after deleting ours).
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens the admin socket at `path` and serves it; `None` (with a warning
/// on stderr) when it cannot be had: the host runs on without one.
pub(crate) fn open(path: &Path) -> Option<AdminSocket> {
    match bind(path) {
        Ok((listener, inode, uid)) => {
            let task = tokio::spawn(serve(listener, uid));
            Some(AdminSocket {
                path: path.to_owned(),
                inode,
                task,
            })
        }
        Err(why) => {
            tracing::warn!(
                "admin socket {}: {why}; running without one (zilla sessions, disconnect and dump cannot reach this host)",
                path.display()
            );
            None
        }
    }
}

fn bind(path: &Path) -> Result<(UnixListener, u64, u32), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err("a file that is not a socket is in the way".into());
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err("another live host answers on it".into()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Stale: its host is gone.
                std::fs::remove_file(path).map_err(|e| format!("cannot replace it: {e}"))?;
            }
            Err(e) => return Err(format!("cannot tell whether a host answers on it: {e}")),
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make it 0600: {e}"))?;
    let metadata = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    // Made by this process: its owner is the host's user.
    Ok((listener, metadata.ino(), metadata.uid()))
}

async fn serve(listener: UnixListener, uid: u32) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == uid => {
                tokio::spawn(answer(stream));
            }
            Ok(peer) => {
                tracing::warn!(
                    "admin socket: refused a connection from uid {} (only the host's user, uid {uid}, may connect)",
                    peer.uid()
                );
                tokio::spawn(refuse(stream, peer.uid(), uid));
            }
            Err(e) => {
                tracing::warn!("admin socket: refused a connection whose user is unknown: {e}")
            }
        }
    }
}

/// Answers another user's connection with its refusal, after taking in its
/// request line (closing on an unread request would reset the connection
/// before the refusal is read); it is not acted on.
async fn refuse(stream: UnixStream, peer: u32, uid: u32) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let refusal = serde_json::json!({
        "error": format!("refused: uid {peer} is not the host's user (uid {uid})")
    });
    let _ = write.write_all(format!("{refusal}\n").as_bytes()).await;
}

/// Reads one request and answers it.
async fn answer(stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    if read.read_line(&mut line).await.is_err() {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let error = serde_json::json!({ "error": format!("bad request: {e}") });
            let _ = write.write_all(format!("{error}\n").as_bytes()).await;
            return;
        }
    };
    let answer = match request {
        Request::Sessions { client_id } => {
            let sessions: Vec<_> = admin::sessions()
                .into_iter()
                .filter(|s| {
                    client_id
                        .as_deref()
                        .is_none_or(|g| glob_matches(g, &s.client_id))
                })
                .collect();
            serde_json::json!({ "sessions": sessions })
        }
        Request::Disconnect { client_id } => {
            serde_json::json!({ "disconnected": admin::disconnect(&client_id) })
        }
        Request::Dump {
            filter,
            duration,
            count,
        } => {
            if let Some(Err(e)) = filter.source.as_deref().map(tap::parse_cidr) {
                serde_json::json!({ "error": e })
            } else {
                let reader = read.into_inner().into_inner();
                dump(reader, write, filter, duration, count).await;
                return;
            }
        }
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

/// Streams a dump until its duration or count is reached or the reader
/// goes away.
async fn dump(
    mut reader: tokio::net::unix::OwnedReadHalf,
    mut write: tokio::net::unix::OwnedWriteHalf,
    filter: admin::DumpRequest,
    duration: Option<f64>,
    count: Option<u64>,
) {
    let mut attached = tap::attach(filter, DUMP_QUEUE, DUMP_BUDGET);
    if write.write_all(b"{\"dumping\":true}\n").await.is_err() {
        return;
    }
    let mut streams = Streams::default();
    let mut captured = 0u64;
    let mut chunk = pcap::header();
    let limit = count.unwrap_or(u64::MAX);
    let deadline = duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut gone = [0u8; 1];
    'dumping: loop {
        if !chunk.is_empty() {
            if send(&mut write, &chunk).await.is_err() {
                return;
            }
            chunk.clear();
        }
        if captured >= limit {
            break;
        }
        let segment = tokio::select! {
            segment = attached.next() => segment,
            _ = sleep_until(deadline) => break,
            // After its request the reader writes only to stop the dump
            // (its Ctrl-C); a read of nothing is a reader gone.
            stop = reader.read(&mut gone) => match stop {
                Ok(n) if n > 0 => break,
                _ => return,
            },
        };
        let Some(segment) = segment else { break };
        captured += streams.write(&segment, &mut chunk);
        // Whatever else is queued goes in the same write.
        while captured < limit {
            match attached.try_next() {
                Some(segment) => captured += streams.write(&segment, &mut chunk),
                None => continue 'dumping,
            }
        }
    }
    let summary = DumpSummary {
        captured,
        dropped: attached.dropped(),
    };
    drop(attached);
    let _ = send(&mut write, &[]).await;
    let trailer = serde_json::to_string(&summary).unwrap_or_default();
    let _ = write.write_all(format!("{trailer}\n").as_bytes()).await;
}

/// One length-prefixed chunk of the capture (empty: the end).
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, chunk: &[u8]) -> io::Result<()> {
    write.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
    write.write_all(chunk).await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
