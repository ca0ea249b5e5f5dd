//! Several guards on one mqtt server: a CONNECT with an Authentication
//! Method goes to the guard naming that method, a user-name token to the
//! first guard (in configuration order) whose `connect` pattern matches, and
//! that guard is the session's own: its identity is what the limits count,
//! what `client-id` binds, what re-authentication must keep, and its earlier
//! grant stands in for credentials.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{ConnectReturnCode, DisconnectReasonCode};

use super::admission::{admitted, exits, refusal};
use super::{connect, connect_properties, refused, verdict, Opening, Server};
use crate::codec::auth::{self, Auth};
use crate::codec::Version;
use crate::config::ServerConfig;
use crate::credentials::Login;
use crate::session::end::End;

/// `jwt0` takes `Bearer {credentials}` user names and the method `jwt`;
/// `jwt1` takes `Key {credentials}` user names and the method `CUSTOM-JWT`;
/// `jwt2` takes only the method `only-method`. `north` is for role `north`
/// of `jwt0`, `south` for role `south` of `jwt1`, `west` for role `west` of
/// `jwt2`; no default exit.
fn server(limits: &'static str, client_id: Option<&'static str>) -> Arc<ServerConfig> {
    Server {
        routes: r#"
- exit: north
  guarded: {jwt0: [north]}
- exit: south
  guarded: {jwt1: [south]}
- exit: west
  guarded: {jwt2: [west]}
"#,
        exit: None,
        guard: true,
        method: Some("jwt".into()),
        more_guards: vec![
            ("jwt1", Some("Key {credentials}"), Some("CUSTOM-JWT")),
            ("jwt2", None, Some("only-method")),
        ],
        limits,
        client_id,
        ..Server::default()
    }
    .build()
}

fn config() -> Arc<ServerConfig> {
    server("[]", None)
}

/// A 5.0 CONNECT of `c1` naming `method` with `token` as its Authentication Data.
fn by_method(config: Arc<ServerConfig>, method: &str, token: &str) -> Opening {
    let mut opening = Opening::new(config, Version::V5);
    opening.connect.properties = Some(mqtt_bytes_v5::ConnectProperties {
        authentication_method: Some(method.into()),
        authentication_data: Some(Bytes::copy_from_slice(token.as_bytes())),
        ..connect_properties()
    });
    opening
}

/// A CONNECT of `c1` whose user name is `username`.
fn by_username(config: Arc<ServerConfig>, version: Version, username: &str) -> Opening {
    let mut opening = Opening::new(config, version);
    opening.login = Some(Login {
        username: username.into(),
        password: Bytes::new(),
    });
    opening
}

/// The guards a session holds a grant of, sorted.
fn guards_of(admission: &super::Admission) -> Vec<String> {
    let mut guards: Vec<String> = ["jwt0", "jwt1", "jwt2", "x509_0"]
        .into_iter()
        .filter(|g| admission.router.authorizations.get(g).is_some())
        .map(str::to_owned)
        .collect();
    guards.sort();
    guards
}

#[test]
fn a_connect_goes_to_the_guard_naming_its_method() {
    let cases = [
        ("jwt", "alice:north", "jwt0", "north"),
        ("CUSTOM-JWT", "bob:south", "jwt1", "south"),
        ("only-method", "carol:west", "jwt2", "west"),
    ];
    for (method, token, guard, exit) in cases {
        let admission = admitted(&mut by_method(config(), method, token));
        assert_eq!(guards_of(&admission), [guard], "{method}");
        assert_eq!(exits(&admission), [exit], "{method}");
        let upstream = &admission.opens[0].2;
        // The upstream is told the session's own guard granted it.
        assert!(upstream.origin.granted.iter().any(|g| &*g.guard == guard));
        assert_eq!(upstream.credentials.as_deref(), Some(token));
    }
    // A token with the other guard's roles opens nothing of that guard.
    let unrouted = refusal(&mut by_method(config(), "CUSTOM-JWT", "bob:north"));
    assert_eq!(unrouted.connack.code, ConnectReturnCode::NotAuthorized);
    let unknown = refusal(&mut by_method(config(), "SCRAM-SHA-1", "bob:south"));
    assert_eq!(
        unknown.connack.code,
        ConnectReturnCode::BadAuthenticationMethod
    );
}

#[test]
fn a_user_name_token_goes_to_the_first_guard_whose_pattern_matches() {
    for version in [Version::V4, Version::V5] {
        let admission = admitted(&mut by_username(config(), version, "Bearer alice:north"));
        assert_eq!(guards_of(&admission), ["jwt0"]);
        let admission = admitted(&mut by_username(config(), version, "Key bob:south"));
        assert_eq!(guards_of(&admission), ["jwt1"]);
        // No pattern matches: refused as a single guard's CONNECT is.
        let refusal = refusal(&mut by_username(config(), version, "Basic x"));
        assert!(refusal.why.contains("expected form"), "{}", refusal.why);
    }
    // Both patterns match `Key ...` when jwt0's is `{credentials}`: the
    // first in configuration order, jwt0, takes it.
    let overlapping = Server {
        routes: "[]",
        guard: true,
        more_guards: vec![("jwt1", Some("Key {credentials}"), None)],
        ..Server::default()
    };
    let mut config = overlapping.build();
    Arc::get_mut(&mut config).expect("unshared").guards[0].pattern = Some(
        crate::options::CredentialsPattern::new(&crate::options::ConnectCredentials {
            username: Some("{credentials}".into()),
            password: None,
        })
        .expect("pattern"),
    );
    let admission = admitted(&mut by_username(config, Version::V5, "Key bob"));
    assert_eq!(guards_of(&admission), ["jwt0"]);
    let identity = admission.router.authorizations.get("jwt0");
    assert_eq!(
        identity.and_then(|s| s.identity.as_deref()),
        Some("Key bob")
    );
}

#[test]
fn the_session_guard_identity_is_what_limits_count_and_client_id_binds() {
    let config = server("- {key: identity, sessions: 1}", None);
    let _bob = by_method(config.clone(), "CUSTOM-JWT", "bob:south").start();
    // bob again, through the other guard and method: the same identity.
    let mut again = by_username(config.clone(), Version::V5, "Bearer bob:north");
    again.connect = connect("c2");
    let limited = refusal(&mut again);
    assert!(
        limited.why.contains(r#"of identity bob"#),
        "{}",
        limited.why
    );
    let mut carol = by_method(config, "CUSTOM-JWT", "carol:south");
    carol.connect.client_id = "c3".into();
    admitted(&mut carol);

    // client-id bound to jwt1's identity: a jwt1 session gets it, a jwt0
    // session has no jwt1 identity to bind.
    let bound = server("[]", Some("${guarded['jwt1'].identity}"));
    let mut empty = by_method(bound.clone(), "CUSTOM-JWT", "bob:south");
    empty.connect.client_id = String::new();
    let admission = admitted(&mut empty);
    assert_eq!(admission.connect.client_id, "bob");
    let mut other = by_method(bound, "jwt", "bob:north");
    other.connect.client_id = "bob".into();
    assert_eq!(
        refusal(&mut other).connack.code,
        ConnectReturnCode::NotAuthorized
    );
}

#[test]
fn an_earlier_grant_of_any_of_the_server_guards_stands_in_for_credentials() {
    // jwt1 granted at the WebSocket upgrade; the CONNECT carries nothing.
    let mut opening = Opening::new(config(), Version::V5);
    opening.origin.granted.push(zilla_engine::Granted {
        guard: "jwt1".into(),
        session: verdict("bob:south").expect("granted"),
        credentials: "bob:south".into(),
    });
    let admission = admitted(&mut opening);
    assert_eq!(guards_of(&admission), ["jwt1"]);
    assert_eq!(exits(&admission), ["south"]);
    // A CONNECT token for jwt0 wins for jwt0; jwt1's grant still counts.
    let mut both = opening_with_grant("Bearer alice:north");
    let admission = admitted(&mut both);
    assert_eq!(guards_of(&admission), ["jwt0", "jwt1"]);
    assert_eq!(exits(&admission), ["north", "south"]);
}

fn opening_with_grant(username: &str) -> Opening {
    let mut opening = by_username(config(), Version::V5, username);
    opening.origin.granted.push(zilla_engine::Granted {
        guard: "jwt1".into(),
        session: verdict("bob:south").expect("granted"),
        credentials: "bob:south".into(),
    });
    opening
}

#[test]
fn re_authentication_uses_the_connect_guard_and_method() {
    let mut h = by_method(config(), "CUSTOM-JWT", "bob:south").start();
    let ack = h.connack();
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method.as_deref(), Some("CUSTOM-JWT"));
    assert_eq!(h.session.reauth_guard(), Some("jwt1"));
    let send = |h: &mut super::Harness, method: &str, token: &str| {
        let mut buf = BytesMut::new();
        auth::write(
            &Auth {
                reason: auth::RE_AUTHENTICATE,
                method: Some(method.into()),
                data: Some(Bytes::copy_from_slice(token.as_bytes())),
                reason_string: None,
            },
            &mut buf,
        );
        h.client_bytes(&buf)
    };
    send(&mut h, "CUSTOM-JWT", "bob:south").expect("taken in");
    assert_eq!(h.session.take_reauth().as_deref(), Some("bob:south"));
    let now = h.now;
    h.session
        .on_reauth(now, verdict("bob:south"), None)
        .expect("refreshed");
    // The other guard's method is not the CONNECT's, even though a guard
    // names it: 0x8C.
    let end = send(&mut h, "jwt", "bob:north").expect_err("ended");
    assert!(matches!(end, End::BadAuthenticationMethod(_)), "{end:?}");

    // Another identity through the session's guard: 0x87.
    let mut h = by_method(config(), "only-method", "carol:west").start();
    h.connack();
    assert_eq!(h.session.reauth_guard(), Some("jwt2"));
    send(&mut h, "only-method", "dave:west").expect("taken in");
    h.session.take_reauth();
    let now = h.now;
    let end = h.session.on_reauth(now, verdict("dave:west"), None);
    assert_eq!(refused(end), DisconnectReasonCode::NotAuthorized);

    // A user-name session never re-authenticates, whichever guard took it.
    let mut h = by_username(config(), Version::V5, "Key bob:south").start();
    h.connack();
    assert_eq!(h.session.reauth_guard(), None);
    let end = send(&mut h, "CUSTOM-JWT", "bob:south");
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
}

#[test]
fn a_connect_without_credentials_for_method_only_guards_is_refused() {
    let config = Server {
        routes: "[]",
        more_guards: vec![("jwt1", None, Some("CUSTOM-JWT"))],
        ..Server::default()
    }
    .build();
    let refusal = refusal(&mut by_username(config.clone(), Version::V5, "Bearer x"));
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert!(
        refusal.why.contains("no Authentication Method"),
        "{}",
        refusal.why
    );
    let admission = admitted(&mut by_method(config, "CUSTOM-JWT", "bob"));
    assert_eq!(guards_of(&admission), ["jwt1"]);
}
