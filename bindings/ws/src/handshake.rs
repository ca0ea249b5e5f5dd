//! The server's half of the opening handshake (RFC 6455 §4.2): checking an
//! upgrade request and writing the `101 Switching Protocols` answer.
//!
//! Pure functions of the request head, so every refusal is tested without a
//! connection; each refusal knows the status and headers it answers with.

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ALLOW, CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use zilla_binding_http::{HttpAnswer, HttpRequest};

/// A valid upgrade request: what the answer and the routing need from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    /// `Sec-WebSocket-Key`, from which `Sec-WebSocket-Accept` is derived.
    pub(crate) key: String,
    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's
    /// order of preference.
    pub(crate) protocols: Vec<String>,
}

/// Why an upgrade request is refused, and the answer that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The status answered.
    pub(crate) status: StatusCode,
    /// What was wrong, for the event and the response body.
    pub(crate) reason: &'static str,
    /// Headers the status calls for (`Allow`, `Sec-WebSocket-Version`, `Upgrade`).
    headers: Vec<(HeaderName, &'static str)>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response refusing the upgrade.
    pub(crate) fn answer(&self) -> HttpAnswer {
        let mut answer = HttpAnswer::status(self.status, self.reason);
        for (name, value) in &self.headers {
            answer
                .response
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        answer
    }
}

/// Checks `request` is a WebSocket opening handshake this server can accept.
pub(crate) fn validate(request: &HttpRequest) -> Result<Offer, Refusal> {
    if request.method != Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET request",
        )
        .with(ALLOW, "GET"));
    }
    // RFC 6455 §4.1: HTTP/1.1 or later; an upgrade only exists in HTTP/1.1
    // (h2 would need RFC 8441's extended CONNECT, which is not offered).
    if request.version != Version::HTTP_11 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    let headers = &request.headers;
    if !has_token(headers, &UPGRADE, "websocket") {
        // RFC 7231 §6.5.15: a 426 names the protocol to upgrade to.
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "no `Upgrade: websocket` header: this resource speaks WebSocket only",
        )
        .with(UPGRADE, "websocket")
        .with(CONNECTION, "Upgrade"));
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the `Connection` header does not list `upgrade`",
        ));
    }
    // RFC 6455 §4.2.2: an unsupported version is answered 426 with the
    // versions the server speaks.
    let version = single(headers, &SEC_WEBSOCKET_VERSION);
    if version.map(str::trim) != Some("13") {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "`Sec-WebSocket-Version` is not 13, the only version spoken",
        )
        .with(SEC_WEBSOCKET_VERSION, "13"));
    }
    let Some(key) = single(headers, &SEC_WEBSOCKET_KEY).map(str::trim) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "no single `Sec-WebSocket-Key` header",
        ));
    };
    // RFC 6455 §4.1: the key is a base64-encoded 16-byte nonce.
    let decoded = data_encoding::BASE64.decode(key.as_bytes());
    if decoded.map(|nonce| nonce.len()) != Ok(16) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` is not the base64 of 16 bytes",
        ));
    }
    Ok(Offer {
        key: key.to_owned(),
        protocols: offered_protocols(headers),
    })
}

/// The subprotocols offered: every `Sec-WebSocket-Protocol` header, split at
/// commas, in order.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The value of a header that must appear once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Whether a comma-separated header lists `token` (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The authority the request was sent to: `Host`, else the URI's.
pub(crate) fn authority(request: &HttpRequest) -> Option<&str> {
    request
        .headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| request.uri.authority().map(|authority| authority.as_str()))
}

/// The `101 Switching Protocols` accepting `key`, naming `protocol` when one
/// was negotiated.
pub(crate) fn accept(key: &str, protocol: Option<&str>) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 6455 §1.3's sample nonce.
    pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade request head, to be spoiled by each test.
    pub(crate) fn upgrade_request(protocols: Option<&str>) -> http::request::Builder {
        let builder = http::Request::builder()
            .method(Method::GET)
            .uri("/mqtt")
            .version(Version::HTTP_11)
            .header(HOST, "localhost:7114")
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, KEY);
        match protocols {
            Some(protocols) => builder.header(SEC_WEBSOCKET_PROTOCOL, protocols),
            None => builder,
        }
    }

    pub(crate) fn head(builder: http::request::Builder) -> HttpRequest {
        builder.body(()).unwrap().into_parts().0
    }

    fn refused(request: HttpRequest) -> Refusal {
        validate(&request).expect_err("refused")
    }

    #[test]
    fn valid_request_yields_key_and_protocols_in_order() {
        let mut request = head(upgrade_request(Some("mqttv3.1, mqtt")));
        request
            .headers
            .append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("echo"));
        let offer = validate(&request).unwrap();
        assert_eq!(offer.key, KEY);
        assert_eq!(offer.protocols, ["mqttv3.1", "mqtt", "echo"]);
        assert_eq!(authority(&request), Some("localhost:7114"));
    }

    #[test]
    fn upgrade_and_connection_tokens_are_case_insensitive() {
        let mut request = head(upgrade_request(None));
        request
            .headers
            .insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        request
            .headers
            .insert(CONNECTION, HeaderValue::from_static("UPGRADE"));
        assert!(validate(&request).is_ok());
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let refusal = refused(head(upgrade_request(None).method(Method::POST)));
        assert_eq!(refusal.status, StatusCode::METHOD_NOT_ALLOWED);
        let answer = refusal.answer();
        assert_eq!(answer.response.headers()[ALLOW], "GET");
        assert!(answer.upgrade.is_none());
    }

    #[test]
    fn http_1_0_is_refused() {
        let refusal = refused(head(upgrade_request(None).version(Version::HTTP_10)));
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn missing_upgrade_gets_426_naming_websocket() {
        let mut request = head(upgrade_request(None));
        request.headers.remove(UPGRADE);
        let refusal = refused(request);
        assert_eq!(refusal.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(refusal.answer().response.headers()[UPGRADE], "websocket");
    }

    #[test]
    fn connection_without_upgrade_gets_400() {
        let mut request = head(upgrade_request(None));
        request
            .headers
            .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(refused(request).status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn wrong_version_gets_426_naming_13() {
        let mut request = head(upgrade_request(None));
        request
            .headers
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let refusal = refused(request);
        assert_eq!(refusal.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            refusal.answer().response.headers()[SEC_WEBSOCKET_VERSION],
            "13"
        );
    }

    #[test]
    fn missing_or_malformed_key_gets_400() {
        let mut request = head(upgrade_request(None));
        request.headers.remove(SEC_WEBSOCKET_KEY);
        assert_eq!(refused(request).status, StatusCode::BAD_REQUEST);

        for bad in ["not base64!", "c2hvcnQ=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            let mut request = head(upgrade_request(None));
            request
                .headers
                .insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static(bad));
            let refusal = refused(request);
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(refusal.reason.contains("16 bytes"), "{bad}");
        }

        let mut request = head(upgrade_request(None));
        request
            .headers
            .append(SEC_WEBSOCKET_KEY, HeaderValue::from_static(KEY));
        assert_eq!(refused(request).status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn accept_derives_the_rfc_sample_key_and_names_the_protocol() {
        let response = accept(KEY, Some("mqtt"));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = response.headers();
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            headers[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "Upgrade");
        assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "mqtt");
        assert!(accept(KEY, None)
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .is_none());
    }
}
