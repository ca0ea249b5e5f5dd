//! Devices with client certificates end to end (issue 25), with the real
//! `type: x509` guard: `examples/mqtt.proxy.x509` run as it is by the
//! `zilla` host (only its fixed ports moved to free ones) in front of a
//! real mosquitto, with certificates made by the example's own
//! `make-certs.sh` (the openssl CLI: CAs, devices, an expired or
//! short-lived certificate, revocations written to the CRL file).
//!
//! What a client sees is read from real clients (mosquitto_pub and
//! mosquitto_sub with `-d`, which print the reason codes they receive;
//! MQTT.js and paho-mqtt running `tests/clients/*/device.*`) or, where it
//! must be exact (TLS alerts, CONNACK properties, 3.1.1 return codes), from
//! a rustls client of the test's (TLS 1.3: the client's handshake completes
//! and its first read returns the alert). Each test also checks the events
//! the host prints and the metrics its prometheus endpoint serves.
//!
//! The client libraries are installed by `.ci/run`; when they are missing
//! those tests fail and say how to install them.

use std::time::{Duration, SystemTime};

use rustls::AlertDescription;
use tokio::time::Instant;
use zilla_testkit::mqtt::packets::{
    ConnectReturnCode, Disconnect, DisconnectReasonCode, Login, Packet, PingReq,
};
use zilla_testkit::mqtt::v311;

#[path = "support/x509_example.rs"]
mod x509_example;
use x509_example::{
    app_token, event, mosquitto, printed, run, start, Watcher, Who, APPS, DEVICES, TIMEOUT,
};

#[path = "support/tls_mqtt.rs"]
mod tls_mqtt;
use tls_mqtt::{refusal, refusal_from, Ending, TlsMqtt, WssMqtt};

#[path = "support/x509_scripts.rs"]
mod x509_scripts;

/// Devices publish and subscribe under their own CN with mosquitto's
/// clients, MQTT 5 and 3.1.1: a command an application (JWT, no
/// certificate, same port) sent reaches the device, and the device's
/// telemetry reaches the application.
#[tokio::test]
async fn mosquitto_devices_publish_and_subscribe_under_their_own_cn() {
    let (_broker, example) = start();
    let token = app_token("operator");
    for (version, cn) in [("mqttv5", "thermostat-5"), ("mqttv311", "thermostat-311")] {
        let device = example.pki.device(cn);
        let command = run(mosquitto(
            "mosquitto_pub",
            &example,
            version,
            &format!("app-ops-{version}"),
            Who::App(&token),
        )
        .args(["-t", &format!("devices/{cn}/commands/setpoint")])
        .args(["-m", "21", "-r", "-q", "1"]))
        .await;
        assert!(command.success, "the application's command\n{command}");

        // The device's subscription gets the (retained) command.
        let received = run(
            mosquitto("mosquitto_sub", &example, version, cn, Who::Device(&device))
                .args(["-d", "-v", "-t", &format!("devices/{cn}/#")])
                .args(["-C", "1", "-W", "10"]),
        )
        .await;
        assert!(received.success, "{cn} subscribes\n{received}");
        assert!(
            printed(&received).contains("received CONNACK (0)"),
            "{received}"
        );
        assert!(
            printed(&received).contains("Subscribed (mid: 1): 0"),
            "{received}"
        );
        assert!(
            received
                .stdout
                .lines()
                .any(|line| line == format!("devices/{cn}/commands/setpoint 21")),
            "{cn} got the command\n{received}"
        );

        // The device's telemetry reaches the application.
        let published =
            run(
                mosquitto("mosquitto_pub", &example, version, cn, Who::Device(&device))
                    .args(["-d", "-t", &format!("devices/{cn}/telemetry")])
                    .args(["-m", "20.5", "-r", "-q", "1"]),
            )
            .await;
        assert!(published.success, "{cn} publishes\n{published}");
        // Mosquitto's 0x10 (no matching subscribers) is a success too.
        let acked = [
            "received PUBACK (Mid: 1, RC:0)",
            "received PUBACK (Mid: 1, RC:16)",
        ];
        assert!(
            acked.iter().any(|ack| printed(&published).contains(ack)),
            "{published}"
        );
        let read = run(mosquitto(
            "mosquitto_sub",
            &example,
            version,
            &format!("app-dashboard-{version}"),
            Who::App(&token),
        )
        .args(["-t", &format!("devices/{cn}/telemetry")])
        .args(["-C", "1", "-W", "10"]))
        .await;
        assert!(read.success, "the application reads\n{read}");
        assert_eq!(read.stdout.trim(), "20.5");

        let granted = format!("id {cn}: x509_0 granted identity {cn} at an earlier layer");
        example
            .wait_events(
                &[&event(DEVICES, "MQTT_AUTHORIZATION_SUCCEEDED"), &granted],
                2,
            )
            .await;
    }
    example
        .wait_event(&[
            &event(APPS, "MQTT_AUTHORIZATION_SUCCEEDED"),
            "authn_jwt authorized identity operator",
        ])
        .await;
    let accepted = [("reason_code", "0x00")];
    for binding in [DEVICES, APPS] {
        let labels = [("binding", binding), accepted[0]];
        example
            .wait_metric("mqtt_connects_total", &labels, 4.0)
            .await;
        example
            .wait_metric("mqtt_connects_total", &[("binding", binding)], 4.0)
            .await;
    }
    assert_eq!(example.metric("tls_refusals_total", &[]).await, 0.0);
    assert_eq!(example.metric("mqtt_refusals_total", &[]).await, 0.0);
}

/// A device cannot use another device's topics: MQTT 5 clients read PUBACK
/// and SUBACK 0x87 (a QoS 0 publish is dropped); 3.1.1 clients read a
/// PUBACK without code and SUBACK 0x80, and their publish is dropped. An
/// application watching `devices/#` gets the marker the device published
/// to its own topic afterwards, and never any of the forged messages.
#[tokio::test]
async fn another_devices_topics_are_refused_and_never_delivered() {
    let (_broker, example) = start();
    let watcher = Watcher::start(&example, "app-watch", "devices/#").await;
    let intruder = example.pki.device("meter-a");
    let forged = |version: &str, qos: &str| {
        let mut command = mosquitto(
            "mosquitto_pub",
            &example,
            version,
            "meter-a",
            Who::Device(&intruder),
        );
        command
            .args(["-d", "-t", "devices/meter-b/commands/open"])
            .args(["-m", &format!("forged-{version}-qos{qos}"), "-q", qos]);
        command
    };
    let subscribe = |version: &str| {
        let mut command = mosquitto(
            "mosquitto_sub",
            &example,
            version,
            "meter-a",
            Who::Device(&intruder),
        );
        command
            .args(["-d", "-t", "devices/meter-b/#"])
            .args(["-C", "1", "-W", "10"]);
        command
    };

    let publish5 = run(&mut forged("mqttv5", "1")).await;
    assert!(
        printed(&publish5).contains("received PUBACK (Mid: 1, RC:135)"),
        "MQTT 5: PUBACK 0x87\n{publish5}"
    );
    assert!(publish5.stderr.contains("Not authorized"), "{publish5}");
    let publish5_qos0 = run(&mut forged("mqttv5", "0")).await;
    assert!(
        publish5_qos0.success,
        "QoS 0 is dropped quietly\n{publish5_qos0}"
    );
    let subscribe5 = run(&mut subscribe("mqttv5")).await;
    assert!(
        printed(&subscribe5).contains("Subscribed (mid: 1): 135"),
        "MQTT 5: SUBACK 0x87\n{subscribe5}"
    );
    let publish311 = run(&mut forged("mqttv311", "1")).await;
    assert!(publish311.success, "{publish311}");
    assert!(
        printed(&publish311).contains("received PUBACK (Mid: 1"),
        "MQTT 3.1.1: a PUBACK (without code)\n{publish311}"
    );
    let subscribe311 = run(&mut subscribe("mqttv311")).await;
    assert!(
        printed(&subscribe311).contains("Subscribed (mid: 1): 128"),
        "MQTT 3.1.1: SUBACK 0x80\n{subscribe311}"
    );

    // Then the device publishes to its own topic: the watcher gets it, and
    // nothing before it from meter-b's topics.
    let marker = run(mosquitto(
        "mosquitto_pub",
        &example,
        "mqttv311",
        "meter-a",
        Who::Device(&intruder),
    )
    .args(["-t", "devices/meter-a/telemetry", "-m", "marker", "-q", "1"]))
    .await;
    assert!(marker.success, "{marker}");
    let lines = watcher.wait_line("devices/meter-a/telemetry marker").await;
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("devices/meter-b/")),
        "a forged message was delivered: {lines:#?}"
    );

    let rejected = example
        .wait_events(
            &[
                &event(DEVICES, "MQTT_PUBLISH_REJECTED"),
                "id meter-a: publish to devices/meter-b/commands/open is not authorized",
            ],
            3,
        )
        .await;
    assert_eq!(rejected.len(), 3, "{rejected:#?}");
    example
        .wait_events(
            &[
                &event(DEVICES, "MQTT_SUBSCRIBE_REJECTED"),
                "devices/meter-b/#",
            ],
            2,
        )
        .await;
    let refusals = |packet: &'static str| {
        [
            ("binding", DEVICES),
            ("packet", packet),
            ("reason_code", "0x87"),
        ]
    };
    // 3.1.1's refusals are counted with the code 5.0 would have read.
    let (puback, publish, suback) = (refusals("PUBACK"), refusals("PUBLISH"), refusals("SUBACK"));
    let each: [(&[(&str, &str)], f64); 3] = [(&puback, 2.0), (&publish, 1.0), (&suback, 2.0)];
    example.wait_metrics("mqtt_refusals_total", &each).await;
}

/// Certificates the handshake refuses: the client reads the alert on its
/// first read and never a byte of MQTT; mosquitto_pub never gets a
/// CONNACK. A certificate from another CA (`unknown_ca`), one issued under
/// the trusted CA's very name by another key (`decrypt_error`: the role
/// by issuer name is only granted to chains the handshake verified), an
/// expired one (`certificate_expired`); and no certificate on the port
/// whose routes all need the `device` role (secure WebSocket): the
/// handshake completes, then `close_notify`.
#[tokio::test]
async fn certificates_refused_at_the_handshake_read_their_alert_and_get_no_connack() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let stranger = example.other_pki("stranger", "Other CA").device("meter-x");
    let impostor = example
        .other_pki("impostor", "Devices CA")
        .device("meter-y");
    let year = Duration::from_secs(365 * 86_400);
    let expired = example.pki.device_valid(
        "meter-z",
        Some(SystemTime::now() - 2 * year),
        SystemTime::now() - year,
    );
    let cases = [
        (
            &stranger,
            AlertDescription::UnknownCA,
            "unknown_ca",
            "unknown_ca",
            "Other CA",
        ),
        (
            &impostor,
            AlertDescription::DecryptError,
            "decrypt_error",
            "bad_signature",
            "Devices CA",
        ),
        (
            &expired,
            AlertDescription::CertificateExpired,
            "certificate_expired",
            "certificate_expired",
            "Devices CA",
        ),
    ];
    for (device, alert, alert_name, reason, issuer) in cases {
        let (ending, client) = refusal_from(example.mqtts, &ca, Some(device)).await;
        assert_eq!(ending, Ending::Alert(alert), "{}", device.name);
        let told = format!(
            "client {client}: handshake failed: client certificate (subject {}, \
             issuer \"{issuer}\") refused ({reason}); alert {alert_name}",
            device.name
        );
        example
            .wait_event(&[&event("north_tls_server", "TLS_HANDSHAKE_FAILED"), &told])
            .await;
        example
            .wait_metric("tls_refusals_total", &[("reason", reason)], 1.0)
            .await;
    }

    // mosquitto_pub with the stranger's certificate: no CONNACK, an error.
    let attempt = run(mosquitto(
        "mosquitto_pub",
        &example,
        "mqttv5",
        "meter-x",
        Who::Device(&stranger),
    )
    .args([
        "-d",
        "-t",
        "devices/meter-x/telemetry",
        "-m",
        "x",
        "-q",
        "1",
    ]))
    .await;
    assert!(!attempt.success, "{attempt}");
    assert!(!printed(&attempt).contains("received CONNACK"), "{attempt}");
    example
        .wait_metric("tls_refusals_total", &[("reason", "unknown_ca")], 2.0)
        .await;

    // No certificate where every route needs one.
    assert_eq!(refusal(example.wss, &ca, None).await, Ending::Closed);
    example
        .wait_event(&[
            &event("north_tls_server", "TLS_AUTHORIZATION_REQUIRED"),
            "need x509_0 [device]",
        ])
        .await;
    example
        .wait_metric(
            "tls_refusals_total",
            &[("reason", "authorization_required")],
            1.0,
        )
        .await;

    example.wait_metric("tls_refusals_total", &[], 5.0).await;
    assert_eq!(
        example.metric("mqtt_connects_total", &[]).await,
        0.0,
        "no CONNACK was ever sent"
    );
}

/// Revoking a device rewrites the CRL file (`make-certs.sh revoke`: `openssl
/// ca -revoke`, `-gencrl`, renamed into place): the next handshake with its
/// certificate reads `certificate_revoked`, in the same process, without a
/// reload; its session connected before goes on, and other devices are not
/// concerned.
#[tokio::test]
async fn a_revocation_written_to_the_crl_file_refuses_the_next_handshake_without_a_restart() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    // The script's CA numbers its certificates from 0x1000: valve-1 is 1000.
    let device = example.pki.device("valve-1");
    let neighbour = example.pki.device("valve-2");
    let (mut connected, ack) =
        TlsMqtt::connect(example.mqtts, &ca, Some(&device), "valve-1", None).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let pid = example.zilla.pid();

    example.pki.revoke(&device);

    assert_eq!(
        refusal(example.mqtts, &ca, Some(&device)).await,
        Ending::Alert(AlertDescription::CertificateRevoked)
    );
    example
        .wait_event(&[
            &event("north_tls_server", "TLS_CLIENT_CERTIFICATE_REVOKED"),
            "client certificate CN=valve-1 serial 1000 issued by \"CN=Devices CA\" \
             is revoked",
        ])
        .await;
    example
        .wait_event(&[
            &event("my_servers", "VAULT_CRL_RELOADED"),
            "/tls/crl: read again, 1 list(s)",
        ])
        .await;
    example
        .wait_metric(
            "tls_refusals_total",
            &[("reason", "certificate_revoked")],
            1.0,
        )
        .await;
    let attempt = run(mosquitto(
        "mosquitto_pub",
        &example,
        "mqttv311",
        "valve-1",
        Who::Device(&device),
    )
    .args([
        "-d",
        "-t",
        "devices/valve-1/telemetry",
        "-m",
        "x",
        "-q",
        "1",
    ]))
    .await;
    assert!(!attempt.success, "{attempt}");
    assert!(!printed(&attempt).contains("received CONNACK"), "{attempt}");
    example
        .wait_metric(
            "tls_refusals_total",
            &[("reason", "certificate_revoked")],
            2.0,
        )
        .await;

    // The same process, never reloaded.
    assert_eq!(example.zilla.pid(), pid);
    assert!(
        example.events(&["reloaded"]).is_empty() && example.events(&["CONFIG_RELOAD"]).is_empty(),
        "{}",
        example.transcript()
    );
    // The session connected before the revocation goes on.
    connected.send(&Packet::PingReq(PingReq)).await;
    assert!(
        matches!(connected.recv().await, Some(Packet::PingResp(_))),
        "the session connected before the revocation is still served"
    );
    // Other devices of the CA are not concerned.
    let (_other, ack) =
        TlsMqtt::connect(example.mqtts, &ca, Some(&neighbour), "valve-2", None).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
}

/// A revoked certificate's refusal names the client's address (with
/// `TLS_HANDSHAKE_FAILED`) besides the revocation event naming its serial:
/// where a revoked, perhaps stolen, key is used from.
#[tokio::test]
async fn a_revoked_certificates_refusal_names_the_client() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let device = example.pki.device("valve-3");
    example.pki.revoke(&device);
    let (ending, client) = refusal_from(example.mqtts, &ca, Some(&device)).await;
    assert_eq!(ending, Ending::Alert(AlertDescription::CertificateRevoked));
    example
        .wait_metric(
            "tls_refusals_total",
            &[("reason", "certificate_revoked")],
            1.0,
        )
        .await;
    let told = example.events(&["north_tls_server", &format!("client {client}")]);
    assert_eq!(
        told.len(),
        1,
        "one event naming the client {client}\n{}",
        example.transcript()
    );
}

/// `mutual: requested`: applications connect to the devices' port without a
/// certificate, with a token as the CONNECT user name. Neither certificate
/// nor token: the application server's jwt guard refuses, CONNACK 0x86
/// (mosquitto_pub reads it too). A token with a device's client id: no
/// route (applications' ids start with `app-`), CONNACK 0x87.
#[tokio::test]
async fn applications_with_a_token_share_the_port_without_a_certificate() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let token = app_token("dashboard");
    let bearer = || Some(Login::new(format!("Bearer {token}"), ""));

    let (mut app, ack) =
        TlsMqtt::connect(example.mqtts, &ca, None, "app-dashboard", bearer()).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    example
        .wait_event(&[
            &event(APPS, "MQTT_AUTHORIZATION_SUCCEEDED"),
            "id app-dashboard: authn_jwt authorized identity dashboard",
        ])
        .await;

    let (mut anonymous, ack) =
        TlsMqtt::connect(example.mqtts, &ca, None, "app-anonymous", None).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(anonymous.recv().await, None, "closed after the refusal");
    let attempt = run(mosquitto(
        "mosquitto_pub",
        &example,
        "mqttv311",
        "app-anonymous",
        Who::Nobody,
    )
    .args(["-d", "-t", "devices/meter-1/commands", "-m", "x", "-q", "1"]))
    .await;
    assert!(!attempt.success, "{attempt}");
    assert!(
        printed(&attempt).contains("received CONNACK (4)"),
        "3.1.1 return code 4\n{attempt}"
    );
    example
        .wait_events(
            &[&event(APPS, "MQTT_CONNECT_REJECTED"), "no credentials"],
            2,
        )
        .await;

    let (_impersonator, ack) =
        TlsMqtt::connect(example.mqtts, &ca, None, "valve-1", bearer()).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    example
        .wait_event(&[
            &event(APPS, "MQTT_CONNECT_REJECTED"),
            "id valve-1",
            "no route accepts this session",
        ])
        .await;

    let connects = |code: &'static str| [("binding", APPS), ("reason_code", code)];
    example
        .wait_metric("mqtt_connects_total", &connects("0x00"), 1.0)
        .await;
    example
        .wait_metric("mqtt_connects_total", &connects("0x86"), 2.0)
        .await;
    example
        .wait_metric("mqtt_connects_total", &connects("0x87"), 1.0)
        .await;
    assert_eq!(example.metric("tls_refusals_total", &[]).await, 0.0);
    app.send(&Packet::Disconnect(Disconnect::new(
        DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
}

/// `client-id: ${guarded['x509_0'].identity}`: a CONNECT whose client id is
/// not the certificate's CN is refused (5.0: 0x85; 3.1.1: return code 2;
/// mosquitto_pub reads it); an empty one is given the CN (5.0: Assigned
/// Client Identifier), so a second session with an empty id is the same
/// session, and takes the first over.
#[tokio::test]
async fn the_client_id_is_the_certificates_cn() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let device = example.pki.device("lock-7");

    let (mut wrong, ack) =
        TlsMqtt::connect(example.mqtts, &ca, Some(&device), "lock-8", None).await;
    assert_eq!(ack.code, ConnectReturnCode::ClientIdentifierNotValid);
    assert_eq!(wrong.recv().await, None, "closed after the refusal");
    let mut wrong311 = TlsMqtt::open(example.mqtts, &ca, Some(&device)).await;
    wrong311
        .send_bytes(&v311::connect_bytes("lock-8", 30))
        .await;
    assert_eq!(wrong311.recv_bytes(4).await, Some(vec![0x20, 2, 0, 2]));
    let attempt = run(mosquitto(
        "mosquitto_pub",
        &example,
        "mqttv5",
        "lock-8",
        Who::Device(&device),
    )
    .args(["-d", "-t", "devices/lock-7/telemetry", "-m", "x", "-q", "1"]))
    .await;
    assert!(!attempt.success, "{attempt}");
    assert!(
        printed(&attempt).contains("received CONNACK (133)"),
        "{attempt}"
    );
    let told = "options.client-id binds the client id to guarded['x509_0'].identity, \
                lock-7 (identity lock-7), not lock-8";
    example
        .wait_events(&[&event(DEVICES, "MQTT_CONNECT_REJECTED"), told], 3)
        .await;

    let (mut assigned, ack) = TlsMqtt::connect(example.mqtts, &ca, Some(&device), "", None).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let id = ack.properties.and_then(|p| p.assigned_client_identifier);
    assert_eq!(id.as_deref(), Some("lock-7"));
    let mut again = TlsMqtt::open(example.mqtts, &ca, Some(&device)).await;
    again.send_bytes(&v311::connect_bytes("", 30)).await;
    assert_eq!(again.recv_bytes(4).await, Some(v311::ACCEPTED.to_vec()));
    match assigned.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(
                disconnect.reason_code,
                DisconnectReasonCode::SessionTakenOver
            )
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }

    let connects = |code: &'static str| [("binding", DEVICES), ("reason_code", code)];
    let (refused, accepted) = (connects("0x85"), connects("0x00"));
    let each: [(&[(&str, &str)], f64); 2] = [(&refused, 3.0), (&accepted, 2.0)];
    example.wait_metrics("mqtt_connects_total", &each).await;
}

/// `limits: [{key: identity, connects: {rate: 1, burst: 10}}]` counts a
/// certificate's CONNECTs by its CN: a device reconnecting in a loop is
/// refused after its burst (5.0: 0x9F; 3.1.1: return code 3), while
/// another device connects.
#[tokio::test]
async fn connects_are_limited_per_certificate_identity() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let device = example.pki.device("pump-1");
    let neighbour = example.pki.device("pump-2");
    let started = Instant::now();
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..30 {
        let (mut client, ack) =
            TlsMqtt::connect(example.mqtts, &ca, Some(&device), "pump-1", None).await;
        if ack.code == ConnectReturnCode::ConnectionRateExceeded {
            refused += 1;
            break;
        }
        assert_eq!(ack.code, ConnectReturnCode::Success);
        accepted += 1;
        client
            .send(&Packet::Disconnect(Disconnect::new(
                DisconnectReasonCode::NormalDisconnection,
            )))
            .await;
        assert_eq!(client.recv().await, None);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(refused, 1, "refused after {accepted} CONNECTs");
    assert!(
        accepted >= 10 && f64::from(accepted) <= 10.0 + elapsed.ceil(),
        "{accepted} CONNECTs in {elapsed} s passed: the burst of 10 and 1/s"
    );
    // 3.1.1 (a token may have come back meanwhile: at most one passes).
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut client = TlsMqtt::open(example.mqtts, &ca, Some(&device)).await;
        client.send_bytes(&v311::connect_bytes("pump-1", 30)).await;
        let connack = client.recv_bytes(4).await.expect("a CONNACK");
        codes.push(connack[3]);
        if connack[3] == 3 {
            refused += 1;
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&3),
        "3.1.1: server unavailable, {codes:?}"
    );

    let (_other, ack) =
        TlsMqtt::connect(example.mqtts, &ca, Some(&neighbour), "pump-2", None).await;
    assert_eq!(ack.code, ConnectReturnCode::Success, "another identity");

    example
        .wait_event(&[
            &event(DEVICES, "MQTT_LIMIT_HIT"),
            "connects limit (1/s, burst 10) of identity pump-1 exceeded",
        ])
        .await;
    let hits = [
        ("binding", DEVICES),
        ("key", "identity"),
        ("limit", "connects"),
        ("action", "refused"),
    ];
    example
        .wait_metric("mqtt_limits_hits_total", &hits, f64::from(refused))
        .await;
    example
        .wait_metric(
            "mqtt_connects_total",
            &[("binding", DEVICES), ("reason_code", "0x9F")],
            f64::from(refused),
        )
        .await;
}

/// A session whose certificate expires while it is connected ends then:
/// DISCONNECT 0xA0 for MQTT 5 (over TLS and over secure WebSocket, where
/// the grant crossed the http and ws servers), the connection closed for
/// 3.1.1.
#[tokio::test]
async fn a_session_ends_when_its_certificate_expires() {
    let (_broker, example) = start();
    let ca = example.server_ca();
    let not_after = SystemTime::now() + Duration::from_secs(6);
    let v5 = example.pki.device_valid("tracker-5", None, not_after);
    let v3 = example.pki.device_valid("tracker-311", None, not_after);
    let ws = example.pki.device_valid("tracker-wss", None, not_after);

    let (mut session5, ack) =
        TlsMqtt::connect(example.mqtts, &ca, Some(&v5), "tracker-5", None).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let mut session3 = TlsMqtt::open(example.mqtts, &ca, Some(&v3)).await;
    session3
        .send_bytes(&v311::connect_bytes("tracker-311", 60))
        .await;
    assert_eq!(session3.recv_bytes(4).await, Some(v311::ACCEPTED.to_vec()));
    let (mut session_ws, ack) = WssMqtt::connect(example.wss, &ca, &ws, "tracker-wss").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // notAfter has a resolution of a second, and was rounded down.
    let early = not_after - Duration::from_secs(1);
    let expired = |ended: Option<Packet>, over: &str| {
        assert!(
            SystemTime::now() >= early,
            "{over}: ended before the certificate expired"
        );
        match ended {
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(
                    disconnect.reason_code,
                    DisconnectReasonCode::MaximumConnectTime
                );
                let why = disconnect.properties.and_then(|p| p.reason_string);
                assert_eq!(why.as_deref(), Some("credentials expired"));
            }
            other => panic!("{over}: expected DISCONNECT 0xA0, got {other:?}"),
        }
    };
    expired(session5.recv_within(Duration::from_secs(20)).await, "TLS");
    assert_eq!(session5.recv().await, None);
    expired(session_ws.recv_within(TIMEOUT).await, "secure WebSocket");
    assert_eq!(session_ws.recv_within(TIMEOUT).await, None);
    assert_eq!(session3.rest().await, Vec::<u8>::new(), "3.1.1: closed");

    for id in ["tracker-5", "tracker-311", "tracker-wss"] {
        example
            .wait_event(&[&event(DEVICES, "MQTT_SESSION_EXPIRED"), &format!("id {id}")])
            .await;
    }
    let disconnects = [
        ("binding", DEVICES),
        ("packet", "DISCONNECT"),
        ("reason_code", "0xA0"),
    ];
    example
        .wait_metric("mqtt_refusals_total", &disconnects, 3.0)
        .await;
}
