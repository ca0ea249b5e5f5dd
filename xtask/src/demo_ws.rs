//! The demo's WebSocket client: an MQTT 5 subscriber over `ws://`, as a
//! browser connects (the token in the `access_token` query parameter, no user
//! name in the CONNECT), reading one message through the proxy.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use mqtt_bytes_v5::{Connect, Filter, Packet, QoS, RetainForwardRule, Subscribe};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const MAX_PACKET: usize = 1 << 20;

/// Subscribes to `topic` over WebSocket on `port` with `token`; returns the
/// topic and payload of the first message received.
pub(crate) fn receive_one(port: u16, token: &str, topic: &str) -> Result<(String, String)> {
    let mut request = format!("ws://localhost:{port}/mqtt?access_token={token}")
        .into_client_request()
        .context("a WebSocket request")?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse()?);
    let stream = TcpStream::connect(("localhost", port))
        .with_context(|| format!("cannot connect to localhost:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (mut socket, _) = tungstenite::client(request, stream)
        .map_err(|e| anyhow::anyhow!("the WebSocket handshake failed: {e}"))?;
    send(
        &mut socket,
        Packet::Connect(
            Connect {
                keep_alive: 30,
                client_id: "demo-websocket".into(),
                clean_start: true,
                properties: None,
            },
            None,
            None,
        ),
    )?;
    match recv(&mut socket)? {
        Packet::ConnAck(ack) if ack.code == mqtt_bytes_v5::ConnectReturnCode::Success => {}
        other => bail!("the proxy refused the WebSocket session: {other:?}"),
    }
    send(
        &mut socket,
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![Filter {
                path: topic.into(),
                qos: QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
            properties: None,
        }),
    )?;
    loop {
        if let Packet::Publish(publish) = recv(&mut socket)? {
            // A clean goodbye: DISCONNECT, then the WebSocket close.
            send(
                &mut socket,
                Packet::Disconnect(mqtt_bytes_v5::Disconnect {
                    reason_code: mqtt_bytes_v5::DisconnectReasonCode::NormalDisconnection,
                    properties: None,
                }),
            )?;
            let _ = socket.close(None);
            return Ok((
                publish.topic.to_string(),
                String::from_utf8_lossy(&publish.payload).into_owned(),
            ));
        }
    }
}

fn send(socket: &mut WebSocket<TcpStream>, packet: Packet) -> Result<()> {
    let mut bytes = BytesMut::new();
    packet
        .write(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    socket.send(Message::binary(bytes.freeze()))?;
    Ok(())
}

/// The next packet; the demo's packets each fit one binary frame.
fn recv(socket: &mut WebSocket<TcpStream>) -> Result<Packet> {
    loop {
        match socket.read().context("reading from the proxy")? {
            Message::Binary(data) => {
                let mut bytes = BytesMut::from(&data[..]);
                return Packet::read(&mut bytes, Some(MAX_PACKET))
                    .map_err(|e| anyhow::anyhow!("{e:?}"));
            }
            Message::Close(frame) => bail!("the proxy closed the WebSocket: {frame:?}"),
            _ => {}
        }
    }
}
