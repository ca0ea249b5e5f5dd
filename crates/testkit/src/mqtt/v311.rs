//! MQTT 3.1.1 over a blocking socket, for tests that connect from plain
//! threads outside any tokio runtime: the CONNECT's bytes and a connection
//! that sends it and reads the CONNACK.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::RECV_TIMEOUT;

/// The CONNACK of an accepted session (no session present, return code 0).
pub const ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];

/// The bytes of a CONNECT for `client_id` (clean session, no will, no
/// credentials) with a keep-alive of `keep_alive` seconds.
pub fn connect_bytes(client_id: &str, keep_alive: u16) -> Vec<u8> {
    assert!(client_id.len() < 116, "a one-byte remaining length");
    let mut connect = vec![0x10, (12 + client_id.len()) as u8, 0, 4];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[4, 0x02]);
    connect.extend_from_slice(&keep_alive.to_be_bytes());
    connect.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    connect.extend_from_slice(client_id.as_bytes());
    connect
}

/// Connects to `127.0.0.1:port`, sends a CONNECT for `client_id` with a
/// keep-alive of 30 s and reads the 4-byte CONNACK, waiting at most
/// [`RECV_TIMEOUT`]; returns the open stream and the CONNACK's bytes.
pub fn connect(port: u16, client_id: &str) -> std::io::Result<(TcpStream, [u8; 4])> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(RECV_TIMEOUT))?;
    stream.write_all(&connect_bytes(client_id, 30))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    Ok((stream, connack))
}
