//! The configurations `cargo xtask bench` runs: the proxy in the seed's
//! shape (with JSON validation, with every metric, behind WebSocket), and
//! HAProxy's.

use std::path::Path;

/// The proxy as in the seed: JWT at CONNECT, one route guarded by `mqtt:stream`.
pub(crate) fn proxy_yaml(guards: &str, broker: u16, validation: bool) -> String {
    let topics = if validation {
        "      topics:
        - name: bench/#
          content:
            model: json
            catalog:
              bench_schemas:
                - subject: reading
"
    } else {
        ""
    };
    let catalogs = if validation {
        r#"catalogs:
  bench_schemas:
    type: inline
    options:
      subjects:
        reading:
          schema: |
            {"type": "object",
             "properties": {"id": {"type": "string"}, "temperature": {"type": "number"},
                            "unit": {"enum": ["C", "F"]}, "at": {"type": "integer"}},
             "required": ["id", "temperature", "unit"]}
"#
    } else {
        ""
    };
    format!(
        "name: bench
{catalogs}guards:
{guards}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {{credentials}}
{topics}    routes:
      - guarded:
          authn_jwt:
            - mqtt:stream
        exit: south_mqtt_client
  south_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {broker}
"
    )
}

/// [`proxy_yaml`] for MQTT over WebSocket: the tcp server exits to an http
/// server that takes WebSocket upgrades, then a ws server that takes the
/// `mqtt` subprotocol, then the same mqtt server (and guard, route and
/// client) as over TCP, so the two differ by the http and ws layers alone.
pub(crate) fn proxy_ws_yaml(guards: &str, broker: u16) -> String {
    const TCP_TO_MQTT: &str = "    exit: north_mqtt_server\n  north_mqtt_server:\n";
    let yaml = proxy_yaml(guards, broker, false);
    assert!(
        yaml.contains(TCP_TO_MQTT),
        "proxy_yaml's tcp server exits to its mqtt server"
    );
    yaml.replacen(
        TCP_TO_MQTT,
        "    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              upgrade: websocket
        exit: north_ws_server
  north_ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: mqtt
        exit: north_mqtt_server
  north_mqtt_server:
",
        1,
    )
}

/// `yaml` (a [`proxy_yaml`]) with every metric on: `stream.*` on the tcp
/// bindings, `mqtt.*` on the mqtt server, and a prometheus exporter on
/// `port` (not scraped during the runs: the cost measured is counting).
pub(crate) fn with_every_metric(yaml: &str, port: u16) -> String {
    let yaml = yaml
        .replace(
            "    type: tcp\n",
            "    type: tcp\n    telemetry: { metrics: [stream.*] }\n",
        )
        .replace(
            "  north_mqtt_server:\n    type: mqtt\n",
            "  north_mqtt_server:\n    type: mqtt\n    telemetry: { metrics: [mqtt.*] }\n",
        );
    format!(
        "{yaml}telemetry:
  metrics: [stream.*, mqtt.*]
  exporters:
    prometheus0:
      type: prometheus
      options:
        endpoints:
          - scheme: http
            port: {port}
"
    )
}

/// HAProxy 2.6 in TCP mode, for each broker: `l4_<i>` forwards bytes;
/// `jwt_<i>` waits for the MQTT CONNECT, takes the token from the user name
/// and checks it as our guard does (RS256 signature, issuer, audience,
/// expiry, scope).
pub(crate) fn haproxy_cfg(brokers: &[(u16, u16, u16)], public_key: &Path) -> String {
    let key = public_key.display();
    let mut config = "global
    maxconn 9900
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
"
    .to_owned();
    for (index, (broker, l4, jwt)) in brokers.iter().enumerate() {
        config.push_str(&format!(
            r#"backend mosquitto_{index}
    server broker 127.0.0.1:{broker}
frontend l4_{index}
    bind 127.0.0.1:{l4}
    default_backend mosquitto_{index}
frontend jwt_{index}
    bind 127.0.0.1:{jwt}
    tcp-request inspect-delay 5s
    tcp-request content reject unless {{ req.payload(0,0),mqtt_is_valid }}
    tcp-request content set-var(txn.token) req.payload(0,0),mqtt_field_value(connect,username),regsub("^Bearer ","")
    tcp-request content set-var(txn.now) date()
    tcp-request content reject unless {{ var(txn.token),jwt_header_query('$.alg') -m str RS256 }}
    tcp-request content reject unless {{ var(txn.token),jwt_verify("RS256","{key}") -m int 1 }}
    tcp-request content reject unless {{ var(txn.token),jwt_payload_query('$.iss') -m str https://auth.example.com }}
    tcp-request content reject unless {{ var(txn.token),jwt_payload_query('$.aud') -m str https://api.example.com }}
    tcp-request content reject unless {{ var(txn.token),jwt_payload_query('$.scope') -m sub mqtt:stream }}
    tcp-request content set-var(txn.exp) var(txn.token),jwt_payload_query('$.exp','int')
    tcp-request content reject unless {{ var(txn.exp),sub(txn.now) gt 0 }}
    tcp-request content accept
    default_backend mosquitto_{index}
"#
        ));
    }
    config
}
