//! The PROXY protocol reader: what it makes of first bytes, and the policy a
//! tcp server applies, over in-memory streams with paused time.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use crate::options::{ProxyProtocolMode, ProxyProtocolOptions};
use crate::proxy_protocol::{
    read_until_verdict, sniff, Admitted, Header, ProxyProtocol, Refused, Sniff, Verdict,
};

const LB: &str = "127.0.0.1:40000";
const STRANGER: &str = "192.0.2.7:40000";
const TIMEOUT: Duration = Duration::from_secs(5);

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn v2_header(command: v2::Command, addresses: v2::Addresses) -> Vec<u8> {
    v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
        .build()
        .unwrap()
}

fn v2_proxy(source: &str, destination: &str) -> Vec<u8> {
    v2_header(v2::Command::Proxy, (addr(source), addr(destination)).into())
}

fn header(len: usize, source: Option<&str>) -> Sniff {
    Sniff::Done(Verdict::Header(Header {
        len,
        source: source.map(addr),
    }))
}

fn malformed(sniffed: Sniff) -> bool {
    matches!(sniffed, Sniff::Done(Verdict::Malformed(_)))
}

#[test]
fn v1_headers_name_the_client() {
    let line = "PROXY TCP4 10.1.2.3 192.168.0.1 56324 7183\r\n";
    let with_data = format!("{line}\x10\x0c");
    assert_eq!(
        sniff(with_data.as_bytes()),
        header(line.len(), Some("10.1.2.3:56324"))
    );
    let six = "PROXY TCP6 2001:db8::1 2001:db8::2 4000 7183\r\n";
    assert_eq!(
        sniff(six.as_bytes()),
        header(six.len(), Some("[2001:db8::1]:4000"))
    );
    // UNKNOWN: the balancer could not tell; the socket's address stands.
    assert_eq!(sniff(b"PROXY UNKNOWN\r\n"), header(15, None));
}

#[test]
fn v1_headers_cut_short_ask_for_more_within_the_107_byte_bound() {
    assert_eq!(sniff(b"PRO"), Sniff::NeedMore(104));
    assert_eq!(sniff(b"PROXY TCP4 10.1.2.3"), Sniff::NeedMore(88));
    assert_eq!(
        sniff(b"PROXY TCP4 10.1.2.3 192.168.0.1 56324 7183\r"),
        Sniff::NeedMore(64)
    );
}

#[test]
fn bad_v1_headers_are_malformed_as_soon_as_they_show_it() {
    assert!(malformed(sniff(b"PROXY TCP5 ")));
    assert!(malformed(sniff(
        b"PROXY TCP4 10.1.2.300 192.168.0.1 56324 7183\r\n"
    )));
    assert!(malformed(sniff(b"PROXY TCP4 10.1.2.3 192.168.0.1 1 2\rX")));
    let endless = format!("PROXY UNKNOWN {}", "x".repeat(100));
    assert!(malformed(sniff(endless.as_bytes())));
}

#[test]
fn v2_headers_name_the_client_and_local_names_none() {
    let proxied = v2_proxy("10.1.2.3:56324", "192.168.0.1:7183");
    assert_eq!(proxied.len(), 28);
    assert_eq!(sniff(&proxied), header(28, Some("10.1.2.3:56324")));
    let six = v2_proxy("[2001:db8::1]:4000", "[2001:db8::2]:7183");
    assert_eq!(sniff(&six), header(52, Some("[2001:db8::1]:4000")));
    // A balancer's own health check: LOCAL, the socket's address stands.
    let local = v2_header(v2::Command::Local, v2::Addresses::Unspecified);
    assert_eq!(sniff(&local), header(16, None));
}

#[test]
fn v2_headers_are_read_to_their_exact_length() {
    let proxied = v2_proxy("10.1.2.3:56324", "192.168.0.1:7183");
    assert_eq!(sniff(&proxied[..5]), Sniff::NeedMore(11));
    assert_eq!(sniff(&proxied[..16]), Sniff::NeedMore(12));
    assert_eq!(sniff(&proxied[..20]), Sniff::NeedMore(8));
    let mut version_one = proxied.clone();
    version_one[12] = 0x11;
    assert!(malformed(sniff(&version_one)));
    let mut bad_family = proxied;
    bad_family[13] = 0x51;
    assert!(malformed(sniff(&bad_family)));
}

#[test]
fn other_protocols_are_told_apart_by_their_first_bytes() {
    assert_eq!(sniff(b""), Sniff::NeedMore(16));
    // MQTT CONNECT, a TLS ClientHello, an HTTP POST.
    assert_eq!(sniff(&[0x10]), Sniff::Done(Verdict::Absent));
    assert_eq!(sniff(&[0x16, 0x03]), Sniff::Done(Verdict::Absent));
    assert_eq!(sniff(b"P"), Sniff::NeedMore(106));
    assert_eq!(sniff(b"PO"), Sniff::Done(Verdict::Absent));
    assert_eq!(sniff(b"\r\n\r\nX"), Sniff::Done(Verdict::Absent));
}

#[tokio::test]
async fn a_v2_header_is_read_without_a_byte_of_what_follows() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let mut sent = v2_proxy("10.1.2.3:56324", "192.168.0.1:7183");
    sent.extend_from_slice(b"payload");
    far.write_all(&sent).await.unwrap();
    let mut buf = Vec::new();
    let verdict = read_until_verdict(&mut near, &mut buf).await.unwrap();
    assert!(matches!(verdict, Some(Verdict::Header(_))));
    assert_eq!(buf.len(), 28, "the header and nothing more");
    let mut rest = [0u8; 7];
    near.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"payload");
}

fn policy(mode: ProxyProtocolMode) -> ProxyProtocol {
    ProxyProtocol {
        options: ProxyProtocolOptions {
            mode,
            from: vec!["127.0.0.0/8".parse().unwrap()],
        },
        timeout: TIMEOUT,
    }
}

/// Runs `admit` for a connection from `peer` on which `sent` has arrived
/// (and, with `close`, then the end of the stream).
async fn admit(
    mode: ProxyProtocolMode,
    peer: &str,
    sent: &[u8],
    close: bool,
) -> (Result<Admitted<DuplexStream>, Refused>, DuplexStream) {
    let (near, mut far) = tokio::io::duplex(1024);
    far.write_all(sent).await.unwrap();
    if close {
        far.shutdown().await.unwrap();
    }
    (policy(mode).admit(near, addr(peer)).await, far)
}

async fn read_all(admitted: Admitted<DuplexStream>) -> Vec<u8> {
    let mut stream = admitted.stream;
    let mut read = Vec::new();
    stream.read_to_end(&mut read).await.unwrap();
    read
}

fn why(result: Result<Admitted<DuplexStream>, Refused>) -> String {
    match result {
        Ok(admitted) => panic!("admitted as {}", admitted.peer),
        Err(Refused(why)) => why.expect("an event"),
    }
}

#[tokio::test]
async fn a_trusted_header_names_the_peer_and_the_rest_reaches_the_exit() {
    let sent = b"PROXY TCP4 10.1.2.3 192.168.0.1 56324 7183\r\nmqtt bytes";
    let (admitted, _far) = admit(ProxyProtocolMode::Required, LB, sent, true).await;
    let admitted = admitted.unwrap();
    assert_eq!(admitted.peer, addr("10.1.2.3:56324"));
    assert_eq!(read_all(admitted).await, b"mqtt bytes");

    let local = v2_header(v2::Command::Local, v2::Addresses::Unspecified);
    let (admitted, _far) = admit(ProxyProtocolMode::Required, LB, &local, true).await;
    assert_eq!(admitted.unwrap().peer, addr(LB));
}

#[tokio::test]
async fn required_refuses_strangers_missing_and_malformed_headers() {
    let (refused, _far) = admit(ProxyProtocolMode::Required, STRANGER, b"", false).await;
    assert_eq!(
        why(refused),
        "192.0.2.7:40000 is not a trusted proxy (`proxy-protocol.from`); refused"
    );
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, &[0x10, 0x0c], false).await;
    assert_eq!(
        why(refused),
        "127.0.0.1:40000 sent no PROXY protocol header; closed"
    );
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, b"PROXY TCP9 x\r\n", false).await;
    assert!(
        why(refused).starts_with("127.0.0.1:40000 sent a malformed PROXY protocol header: "),
        "names the peer and why"
    );
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, b"PROXY TCP4 1.2", true).await;
    assert!(why(refused).contains("closed after 14 bytes, inside a PROXY protocol header"));
    // A health check that connects and closes: no event for it.
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, b"", true).await;
    assert_eq!(refused.unwrap_err(), Refused(None));
}

#[tokio::test]
async fn optional_passes_headerless_bytes_on_and_refuses_untrusted_headers() {
    let (admitted, _far) =
        admit(ProxyProtocolMode::Optional, STRANGER, b"\x10\x0cMQTT", true).await;
    let admitted = admitted.unwrap();
    assert_eq!(admitted.peer, addr(STRANGER));
    assert_eq!(read_all(admitted).await, b"\x10\x0cMQTT");
    // Bytes that began like a signature are handed on too.
    let (admitted, _far) = admit(ProxyProtocolMode::Optional, LB, b"POST / HTTP/1.1", true).await;
    assert_eq!(read_all(admitted.unwrap()).await, b"POST / HTTP/1.1");

    let header = b"PROXY TCP4 10.1.2.3 192.168.0.1 56324 7183\r\n";
    let (admitted, _far) = admit(ProxyProtocolMode::Optional, LB, header, true).await;
    assert_eq!(admitted.unwrap().peer, addr("10.1.2.3:56324"));
    let (refused, _far) = admit(ProxyProtocolMode::Optional, STRANGER, header, true).await;
    assert!(why(refused).contains("sent a PROXY protocol header but is not a trusted proxy"));
}

#[tokio::test(start_paused = true)]
async fn a_header_must_arrive_before_the_deadline() {
    let started = Instant::now();
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, b"PROXY TCP4 ", false).await;
    assert_eq!(started.elapsed(), TIMEOUT);
    assert_eq!(
        why(refused),
        "127.0.0.1:40000 sent no complete PROXY protocol header within 5 s; closed"
    );

    let started = Instant::now();
    let (refused, _far) = admit(ProxyProtocolMode::Required, LB, b"", false).await;
    assert_eq!(started.elapsed(), TIMEOUT);
    assert!(why(refused).contains("sent no PROXY protocol header within 5 s"));
}

#[tokio::test(start_paused = true)]
async fn optional_lets_a_silent_client_through_at_the_deadline() {
    let started = Instant::now();
    let (admitted, mut far) = admit(ProxyProtocolMode::Optional, STRANGER, b"", false).await;
    assert_eq!(started.elapsed(), TIMEOUT);
    let admitted = admitted.unwrap();
    assert_eq!(admitted.peer, addr(STRANGER));
    far.write_all(b"late").await.unwrap();
    drop(far);
    assert_eq!(read_all(admitted).await, b"late");
}
