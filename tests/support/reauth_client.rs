//! The raw MQTT 5 client of tests/mqtt_reauth.rs: CONNECT with an
//! Authentication Method, AUTH written and read by hand (the testkit's codec
//! has no AUTH packet), and the frames around them.

use super::*;
/// A raw MQTT 5 client.
pub(super) struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connects as `id` with `token`: as the Authentication Data of method
    /// `method`, or as a `Bearer` user name without one.
    pub(super) async fn connect(
        port: u16,
        id: &str,
        method: Option<&str>,
        token: &str,
    ) -> (Self, ConnAck) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
        };
        let properties = method.map(|method| ConnectProperties {
            session_expiry_interval: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            request_response_info: None,
            request_problem_info: None,
            user_properties: Vec::new(),
            authentication_method: Some(method.into()),
            authentication_data: Some(Bytes::copy_from_slice(token.as_bytes())),
        });
        let login = method.is_none().then(|| Login {
            username: format!("Bearer {token}"),
            password: String::new(),
        });
        let connect = Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: true,
            properties,
        };
        client.send(&Packet::Connect(connect, None, login)).await;
        match client.recv().await {
            Some(Frame::Packet(packet)) => match *packet {
                Packet::ConnAck(ack) => (client, ack),
                other => panic!("expected CONNACK, got {other:?}"),
            },
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub(super) async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).unwrap();
        let _ = self.stream.write_all(&out).await;
    }

    /// AUTH with `reason`, `method` and `token` (each property if given).
    pub(super) async fn auth(&mut self, reason: u8, method: Option<&str>, token: Option<&str>) {
        let mut properties = Vec::new();
        for (id, value) in [(0x15u8, method), (0x16, token)] {
            if let Some(value) = value {
                properties.push(id);
                properties.extend_from_slice(&(value.len() as u16).to_be_bytes());
                properties.extend_from_slice(value.as_bytes());
            }
        }
        let mut body = vec![reason];
        varint(properties.len(), &mut body);
        body.extend_from_slice(&properties);
        let mut frame = vec![0xF0];
        varint(body.len(), &mut frame);
        frame.extend_from_slice(&body);
        let _ = self.stream.write_all(&frame).await;
    }

    /// AUTH 0x19 with the method `jwt` and `token`.
    pub(super) async fn refresh(&mut self, token: &str) {
        self.auth(0x19, Some("jwt"), Some(token)).await;
    }

    /// The next frame, or `None` once the connection is closed.
    pub(super) async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(TIMEOUT, self.recv_inner())
            .await
            .expect("a packet or the end of the connection in time")
    }

    pub(super) async fn recv_inner(&mut self) -> Option<Frame> {
        loop {
            if let Some((header, len)) = frame_len(&self.buf) {
                if self.buf.len() >= header + len {
                    let byte1 = self.buf[0];
                    let body = self.buf[header..header + len].to_vec();
                    return Some(match byte1 >> 4 {
                        15 => {
                            self.buf.advance(header + len);
                            Frame::Auth(body.first().copied().unwrap_or(0), auth_method(&body))
                        }
                        14 => {
                            self.buf.advance(header + len);
                            Frame::Disconnect(body.first().copied().unwrap_or(0))
                        }
                        _ => Frame::Packet(Box::new(Packet::read(&mut self.buf, None).unwrap())),
                    });
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame, which must be a packet.
    pub(super) async fn packet(&mut self) -> Packet {
        match self.recv().await {
            Some(Frame::Packet(packet)) => *packet,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The DISCONNECT reason the session ends with (the connection closes).
    pub(super) async fn disconnected(&mut self) -> u8 {
        let code = loop {
            match self.recv().await {
                Some(Frame::Disconnect(code)) => break code,
                Some(_) => {}
                None => panic!("closed without DISCONNECT"),
            }
        };
        assert!(self.recv().await.is_none(), "closed after DISCONNECT");
        code
    }
}

pub(super) fn varint(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

/// The fixed header's length and the remaining length, once both arrived.
pub(super) fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (index, byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((index + 2, len));
        }
    }
    None
}

/// The Authentication Method of an AUTH body (reason, properties).
pub(super) fn auth_method(body: &[u8]) -> Option<String> {
    // Property lengths of these tests are under 128: one byte.
    let properties = body.get(2..)?;
    let mut at = 0;
    while at < properties.len() {
        let id = properties[at];
        let len = usize::from(u16::from_be_bytes([properties[at + 1], properties[at + 2]]));
        let value = &properties[at + 3..at + 3 + len];
        if id == 0x15 {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        at += 3 + len;
    }
    None
}
