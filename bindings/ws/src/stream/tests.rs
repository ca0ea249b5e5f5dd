//! The adapter against tungstenite (and raw bytes) on the other end of an
//! in-memory pipe: bytes both ways, MQTT packets across and within frames,
//! control frames, and every fault's close code.

use std::io;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::WsStream;
use crate::options::Limits;
use crate::testing::{frame, read_close_code, server_pair, within, ws_client, MASK};

/// An MQTT 3.1.1 CONNECT (client id `zilla`, keep alive 60).
const CONNECT: &[u8] = &[
    0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x05, b'z', b'i',
    b'l', b'l', b'a',
];
const PINGREQ: &[u8] = &[0xc0, 0x00];
const DISCONNECT: &[u8] = &[0xe0, 0x00];

async fn pair(protocol: Option<&str>) -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (exit, raw) = server_pair(protocol, Limits::default()).await;
    (exit, ws_client(raw).await)
}

async fn next(client: &mut WebSocketStream<DuplexStream>) -> Message {
    within(client.next())
        .await
        .expect("a message")
        .expect("no error")
}

/// Reads one MQTT packet (fixed header, remaining length up to 127).
async fn read_packet(exit: &mut WsStream<DuplexStream>) -> Vec<u8> {
    let mut header = [0u8; 2];
    within(exit.read_exact(&mut header)).await.unwrap();
    let mut packet = header.to_vec();
    packet.resize(2 + usize::from(header[1]), 0);
    within(exit.read_exact(&mut packet[2..])).await.unwrap();
    packet
}

/// Reads until the exit's stream ends, returning how it ended.
async fn read_to_end(exit: &mut WsStream<DuplexStream>) -> io::Result<Vec<u8>> {
    let mut read = Vec::new();
    within(exit.read_to_end(&mut read)).await.map(|_| read)
}

#[tokio::test]
async fn bytes_flow_both_ways_in_binary_frames() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    assert_eq!(exit.protocol(), Some("mqtt"));
    within(client.send(Message::binary(CONNECT))).await.unwrap();
    assert_eq!(read_packet(&mut exit).await, CONNECT);

    within(exit.write_all(&[0x20, 0x02, 0x00, 0x00]))
        .await
        .unwrap();
    within(exit.flush()).await.unwrap();
    assert_eq!(
        next(&mut client).await,
        Message::binary(vec![0x20, 0x02, 0x00, 0x00])
    );
}

#[tokio::test]
async fn a_packet_split_across_frames_is_read_whole() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    for part in [&CONNECT[..1], &CONNECT[1..7], &CONNECT[7..]] {
        within(client.send(Message::binary(part.to_vec())))
            .await
            .unwrap();
    }
    assert_eq!(read_packet(&mut exit).await, CONNECT);
}

#[tokio::test]
async fn several_packets_in_one_frame_are_read_in_turn() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    let batch = [CONNECT, PINGREQ, DISCONNECT].concat();
    within(client.send(Message::binary(batch))).await.unwrap();
    assert_eq!(read_packet(&mut exit).await, CONNECT);
    // A read smaller than what is left keeps the rest for the next read.
    let mut one = [0u8; 1];
    within(exit.read_exact(&mut one)).await.unwrap();
    assert_eq!(one, [0xc0]);
    let mut rest = [0u8; 3];
    within(exit.read_exact(&mut rest)).await.unwrap();
    assert_eq!(rest, [0x00, 0xe0, 0x00]);
}

#[tokio::test]
async fn frames_that_arrived_together_are_read_in_one_read() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    for packet in [CONNECT, PINGREQ, DISCONNECT] {
        within(client.feed(Message::binary(packet.to_vec())))
            .await
            .unwrap();
    }
    within(client.flush()).await.unwrap();
    // One read hands over all three packets, so the exit can forward them
    // in one write rather than one per message.
    let mut buffer = [0u8; 256];
    let n = within(exit.read(&mut buffer)).await.unwrap();
    assert_eq!(&buffer[..n], [CONNECT, PINGREQ, DISCONNECT].concat());
}

#[tokio::test]
async fn writes_longer_than_a_frame_go_out_in_several() {
    let limits = Limits {
        max_frame_size: 200,
        max_message_size: 1000,
    };
    let (mut exit, raw) = server_pair(None, limits).await;
    let mut client = ws_client(raw).await;
    within(exit.write_all(&[7u8; 500])).await.unwrap();
    within(exit.flush()).await.unwrap();
    for len in [200, 200, 100] {
        assert_eq!(next(&mut client).await, Message::binary(vec![7u8; len]));
    }
}

#[tokio::test]
async fn ping_is_answered_while_the_exit_only_reads() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    let reader = tokio::spawn(async move { read_to_end(&mut exit).await });
    within(client.send(Message::Ping("are you there".into())))
        .await
        .unwrap();
    assert_eq!(
        next(&mut client).await,
        Message::Pong("are you there".into())
    );
    // And once more, now that the exit is parked in a read.
    within(client.send(Message::Ping("still?".into())))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await, Message::Pong("still?".into()));
    within(client.send(Message::binary(PINGREQ))).await.unwrap();
    within(client.close(None)).await.unwrap();
    let read = within(reader).await.unwrap().expect("clean end");
    assert_eq!(read, PINGREQ);
}

#[tokio::test]
async fn peer_close_is_answered_and_ends_the_stream() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    within(client.send(Message::Close(Some(normal))))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut exit).await.unwrap(), b"");
    // The reply went out before the EOF.
    match next(&mut client).await {
        Message::Close(Some(reply)) => assert_eq!(reply.code, CloseCode::Normal),
        other => panic!("expected the Close reply, got {other:?}"),
    }
    within(exit.shutdown()).await.unwrap();
    assert!(within(client.next()).await.is_none(), "transport closed");
    assert!(exit.write_all(b"late").await.is_err());
}

#[tokio::test]
async fn peer_close_with_an_error_code_reads_as_an_error() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    let away = CloseFrame {
        code: CloseCode::Error,
        reason: "broker gone".into(),
    };
    within(client.send(Message::Close(Some(away))))
        .await
        .unwrap();
    let error = read_to_end(&mut exit).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    assert!(error.to_string().contains("1011 (broker gone)"), "{error}");
}

#[tokio::test]
async fn shutdown_sends_close_1000_and_reads_end_with_the_reply() {
    let (mut exit, mut client) = pair(Some("mqtt")).await;
    within(exit.shutdown()).await.unwrap();
    let reader = tokio::spawn(async move { read_to_end(&mut exit).await });
    match next(&mut client).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Normal),
        other => panic!("expected Close 1000, got {other:?}"),
    }
    // Polling on sends the client's reply, then sees the transport end.
    assert!(within(client.next()).await.is_none());
    assert_eq!(within(reader).await.unwrap().unwrap(), b"");
}

#[tokio::test]
async fn transport_ending_without_close_is_eof() {
    let (mut exit, raw) = server_pair(Some("mqtt"), Limits::default()).await;
    drop(raw);
    assert_eq!(read_to_end(&mut exit).await.unwrap(), b"");
}

#[tokio::test]
async fn text_frame_on_mqtt_closes_with_1003() {
    let (mut exit, mut client) = pair(Some("mqttv3.1")).await;
    let reader = tokio::spawn(async move { read_to_end(&mut exit).await });
    within(client.send(Message::text("CONNECT"))).await.unwrap();
    match next(&mut client).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Unsupported),
        other => panic!("expected Close 1003, got {other:?}"),
    }
    let error = within(reader).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn text_frames_are_bytes_on_echo_and_answered_in_kind() {
    let (mut exit, mut client) = pair(Some("echo")).await;
    within(client.send(Message::text("héllo\n"))).await.unwrap();
    let mut read = [0u8; 7];
    within(exit.read_exact(&mut read)).await.unwrap();
    assert_eq!(&read, "héllo\n".as_bytes());
    // A character split across writes is held until it is whole.
    within(exit.write_all(b"h\xc3")).await.unwrap();
    within(exit.write_all(b"\xa9")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("h"));
    assert_eq!(next(&mut client).await, Message::text("é"));

    within(client.send(Message::binary(vec![1, 2])))
        .await
        .unwrap();
    let mut read = [0u8; 2];
    within(exit.read_exact(&mut read)).await.unwrap();
    within(exit.write_all(&read)).await.unwrap();
    assert_eq!(next(&mut client).await, Message::binary(vec![1, 2]));
}

/// Writes `bytes` as the client, and returns the close code the server
/// answers and what the exit's read ended with.
async fn fault(protocol: Option<&str>, limits: Limits, bytes: &[u8]) -> (u16, io::Result<Vec<u8>>) {
    let (mut exit, mut raw) = server_pair(protocol, limits).await;
    let reader = tokio::spawn(async move { read_to_end(&mut exit).await });
    within(raw.write_all(bytes)).await.unwrap();
    let code = within(read_close_code(&mut raw)).await;
    let ended = within(reader).await.unwrap();
    // After its Close frame the server shuts the transport.
    let mut rest = Vec::new();
    within(raw.read_to_end(&mut rest)).await.unwrap();
    (code, ended)
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let (code, ended) = fault(Some("mqtt"), Limits::default(), &frame(0x82, b"abc", None)).await;
    assert_eq!(code, 1002);
    assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn reserved_bits_close_with_1002() {
    // FIN + RSV1 + binary, with no extension negotiated.
    let (code, ended) = fault(Some("mqtt"), Limits::default(), &frame(0xc2, b"abc", MASK)).await;
    assert_eq!(code, 1002);
    assert!(ended.is_err());
}

#[tokio::test]
async fn unknown_opcode_closes_with_1002() {
    let (code, ended) = fault(Some("mqtt"), Limits::default(), &frame(0x83, b"abc", MASK)).await;
    assert_eq!(code, 1002);
    assert!(ended.is_err());
}

#[tokio::test]
async fn a_frame_declaring_1_gib_closes_with_1009_from_its_header() {
    // Only the header is ever sent: the answer cannot have waited for (or
    // made room for) the gigabyte it announces.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&MASK.unwrap());
    let (code, ended) = fault(Some("mqtt"), Limits::default(), &header).await;
    assert_eq!(code, 1009);
    assert!(ended.unwrap_err().to_string().contains("too long"));
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let limits = Limits {
        max_frame_size: 1024,
        max_message_size: 2048,
    };
    let fragment = [5u8; 1000];
    let bytes = [
        frame(0x02, &fragment, MASK), // binary, not final
        frame(0x00, &fragment, MASK), // continuation
        frame(0x80, &fragment, MASK), // final continuation: 3000 bytes in all
    ]
    .concat();
    let (code, ended) = fault(Some("mqtt"), limits, &bytes).await;
    assert_eq!(code, 1009);
    assert!(ended.is_err());
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let (code, ended) = fault(
        Some("echo"),
        Limits::default(),
        &frame(0x81, &[b'a', 0xff, 0xfe], MASK),
    )
    .await;
    assert_eq!(code, 1007);
    assert!(ended.is_err());
}

#[tokio::test]
async fn writes_after_a_failure_report_the_stream_closed() {
    let (mut exit, mut raw) = server_pair(Some("mqtt"), Limits::default()).await;
    within(raw.write_all(&frame(0x82, b"abc", None)))
        .await
        .unwrap();
    let mut buffer = [0u8; 8];
    assert!(within(exit.read(&mut buffer)).await.is_err());
    assert_eq!(within(read_close_code(&mut raw)).await, 1002);
    let error = within(exit.write_all(b"late")).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    within(exit.shutdown()).await.unwrap();
}
