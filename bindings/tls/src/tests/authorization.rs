//! `options.authorization` and `guarded` routes: what the guard is given,
//! what it grants and where that goes, what a client is refused, and the
//! configuration errors.

use super::*;

/// `device-1` is a partner, `device-2` something else, `device-9` refused.
const GUARD: &str = "{ roles: { device-1: [partner], device-2: [other] }, refuse: [device-9] }";

/// A server asking for client certificates as `mutual` says, with the
/// partner route guarded by `x509_0`, then `fallback` routes.
fn guarded(mutual: &str, fallback: &str) -> String {
    format!(
        r#"
    options:
      keys: [localhost]
      trust: [clientca]
      mutual: {mutual}
      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0: [partner]
        exit: partner_app{fallback}"#
    )
}

const OPEN_FALLBACK: &str = "
      - exit: open_app";

const PEER: &str = "client 192.0.2.7:50000";

#[tokio::test]
async fn a_granted_role_takes_the_guarded_route_and_the_grant_reaches_the_exit() {
    let events = capture();
    let pki = Pki::new();
    let served = served("tls-authz-granted", &pki, GUARD, &guarded("required", ""));
    let device = pki.client_ca.client("device-1");
    let outcome = served
        .connect(&client(&pki, Some(&device), &[], Version::Tls13))
        .await;
    assert_eq!(
        outcome,
        Outcome::Served(
            "exit=partner_app granted=device-1|partner|chain=device-1,issuer=Client CA|certificates=1"
                .into()
        )
    );

    // Through an intermediate CA: the guard gets the chain as presented,
    // the device's own certificate first.
    let devices_ca = pki.client_ca.intermediate("Devices CA");
    let device = devices_ca.client("device-1");
    let outcome = served
        .connect(&client(
            &pki,
            Some(&device),
            &[&devices_ca.cert_der],
            Version::Tls12,
        ))
        .await;
    assert_eq!(
        outcome,
        Outcome::Served(
            "exit=partner_app granted=device-1|partner|chain=device-1<Devices CA,issuer=Devices CA|certificates=2"
                .into()
        )
    );
    assert_eq!(events.take(), vec![], "a granted client is no event");
    assert_eq!(served.refusals(), BTreeMap::new());
}

#[tokio::test]
async fn a_session_without_the_roles_is_closed_with_an_event() {
    let events = capture();
    let pki = Pki::new();
    let served = served("tls-authz-denied", &pki, GUARD, &guarded("required", ""));
    let other = pki.client_ca.client("device-2");
    let outcome = served
        .connect(&client(&pki, Some(&other), &[], Version::Tls13))
        .await;
    assert_eq!(outcome, Outcome::Closed, "closed with close_notify");
    let (name, message) = events.one();
    assert_eq!(name, "TLS_AUTHORIZATION_DENIED");
    assert_eq!(
        message,
        format!(
            "{PEER} (subject device-2, issuer \"Client CA\"): x509_0 granted identity \
             device-2 roles [other]; the routes for server name localhost, \
             no alpn need x509_0 [partner]; closed"
        )
    );
    assert_eq!(
        served.refusals(),
        BTreeMap::from([("no_role".to_owned(), 1)])
    );
}

#[tokio::test]
async fn requested_without_a_certificate_goes_on_without_a_grant() {
    let events = capture();
    let pki = Pki::new();
    let served = served(
        "tls-authz-requested",
        &pki,
        GUARD,
        &guarded("requested", OPEN_FALLBACK),
    );
    let anonymous = served
        .connect(&client(&pki, None, &[], Version::Tls13))
        .await;
    assert_eq!(anonymous, Outcome::Served("exit=open_app granted=-".into()));
    let device = pki.client_ca.client("device-1");
    let partner = served
        .connect(&client(&pki, Some(&device), &[], Version::Tls13))
        .await;
    assert!(
        matches!(&partner, Outcome::Served(said) if said.starts_with("exit=partner_app granted=device-1|partner|")),
        "{partner:?}"
    );
    // Without a role the partner route is skipped and the fallback taken.
    let other = pki.client_ca.client("device-2");
    let outcome = served
        .connect(&client(&pki, Some(&other), &[], Version::Tls13))
        .await;
    assert!(
        matches!(&outcome, Outcome::Served(said) if said.starts_with("exit=open_app granted=device-2|other|")),
        "{outcome:?}"
    );
    assert_eq!(events.take(), vec![]);

    // With only the guarded route, a client without a certificate has
    // nowhere to go.
    let served = served_only_guarded(&pki);
    let outcome = served
        .connect(&client(&pki, None, &[], Version::Tls13))
        .await;
    assert_eq!(outcome, Outcome::Closed);
    let (name, message) = events.one();
    assert_eq!(name, "TLS_AUTHORIZATION_REQUIRED");
    assert_eq!(
        message,
        format!(
            "{PEER}: no client certificate, and the routes for server name localhost, \
             no alpn need x509_0 [partner]; closed"
        )
    );
    assert_eq!(
        served.refusals(),
        BTreeMap::from([("authorization_required".to_owned(), 1)])
    );
}

fn served_only_guarded(pki: &Pki) -> Served {
    served(
        "tls-authz-requested-only",
        pki,
        GUARD,
        &guarded("requested", ""),
    )
}

#[tokio::test]
async fn a_certificate_the_guard_refuses_closes_the_connection() {
    let events = capture();
    let pki = Pki::new();
    // Even with an unguarded route to fall back on (see docs: Zilla would
    // serve it there without a session).
    let served = served(
        "tls-authz-refused",
        &pki,
        GUARD,
        &guarded("requested", OPEN_FALLBACK),
    );
    let unwelcome = pki.client_ca.client("device-9");
    let outcome = served
        .connect(&client(&pki, Some(&unwelcome), &[], Version::Tls13))
        .await;
    assert_eq!(outcome, Outcome::Closed);
    let (name, message) = events.one();
    assert_eq!(name, "TLS_AUTHORIZATION_FAILED");
    assert_eq!(
        message,
        format!(
            "{PEER}: guard x509_0 refused the client certificate (subject device-9, \
             issuer \"Client CA\"): device-9 is not welcome; closed"
        )
    );
    assert_eq!(
        served.refusals(),
        BTreeMap::from([("guard_refused".to_owned(), 1)])
    );

    let down = served_with_guard_down(&pki);
    let device = pki.client_ca.client("device-1");
    let outcome = down
        .connect(&client(&pki, Some(&device), &[], Version::Tls13))
        .await;
    assert_eq!(outcome, Outcome::Closed);
    let (name, message) = events.one();
    assert_eq!(name, "TLS_AUTHORIZATION_FAILED");
    assert!(
        message.contains("guard x509_0 could not decide on the client certificate (subject device-1, issuer \"Client CA\"): the test guard is down; closed"),
        "{message}"
    );
    assert!(!message.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        down.refusals(),
        BTreeMap::from([("guard_unavailable".to_owned(), 1)])
    );
}

fn served_with_guard_down(pki: &Pki) -> Served {
    served(
        "tls-authz-guard-down",
        pki,
        "{ unavailable: true }",
        &guarded("required", ""),
    )
}

/// The configuration errors of a tls server with `tls_body`.
fn errors(name: &str, tls_body: &str) -> String {
    config_errors(&yaml(name, &Pki::new(), GUARD, tls_body))
}

const KEYS: &str = "
    options:
      keys: [localhost]
      trust: [clientca]";

#[test]
fn configuration_errors_name_their_path() {
    let two_guards = errors(
        "tls-authz-two",
        &format!(
            "{KEYS}
      authorization:
        x509_0: {{ credentials: {{ certificates: pem }} }}
        x509_1: {{ credentials: {{ certificates: pem }} }}
    exit: open_app"
        ),
    );
    assert!(
        two_guards.contains("options.authorization: name exactly one guard"),
        "{two_guards}"
    );

    let no_credentials = errors(
        "tls-authz-no-credentials",
        &format!("{KEYS}\n      authorization: {{ x509_0: {{}} }}\n    exit: open_app"),
    );
    assert!(
        no_credentials.contains(
            "options.authorization.x509_0.credentials: say how the guard gets the client's certificates"
        ),
        "{no_credentials}"
    );

    let no_format = errors(
        "tls-authz-no-format",
        &format!(
            "{KEYS}\n      authorization: {{ x509_0: {{ credentials: {{}} }} }}\n    exit: open_app"
        ),
    );
    assert!(
        no_format.contains("options.authorization.x509_0.credentials.certificates: say how"),
        "{no_format}"
    );

    let der = errors(
        "tls-authz-der",
        &format!(
            "{KEYS}\n      authorization: {{ x509_0: {{ credentials: {{ certificates: der }} }} }}\n    exit: open_app"
        ),
    );
    assert!(der.contains("unknown variant `der`"), "{der}");

    let unknown_guard = errors(
        "tls-authz-unknown-guard",
        &format!(
            "{KEYS}\n      authorization: {{ nobody: {{ credentials: {{ certificates: pem }} }} }}\n    exit: open_app"
        ),
    );
    assert!(
        unknown_guard.contains("options.authorization.nobody"),
        "{unknown_guard}"
    );

    let mutual_none = errors(
        "tls-authz-mutual-none",
        "
    options:
      keys: [localhost]
      authorization: { x509_0: { credentials: { certificates: pem } } }
    exit: open_app",
    );
    assert!(
        mutual_none.contains(
            "options.authorization: the guard decides on client certificates, and this server asks for none"
        ),
        "{mutual_none}"
    );

    let other_guard = errors(
        "tls-authz-other-guard",
        &format!(
            "{KEYS}
      authorization: {{ x509_0: {{ credentials: {{ certificates: pem }} }} }}
    routes:
      - guarded: {{ x509_1: [partner] }}
        exit: partner_app"
        ),
    );
    assert!(
        other_guard.contains(
            "routes[0].guarded.x509_1: only the guard of `options.authorization` (x509_0) grants anything here"
        ),
        "{other_guard}"
    );

    let without_authorization = errors(
        "tls-authz-guarded-alone",
        &format!(
            "{KEYS}
    routes:
      - guarded: {{ x509_0: [partner] }}
        exit: partner_app"
        ),
    );
    assert!(
        without_authorization.contains(
            "routes[0].guarded.x509_0: a route guarded by `x509_0` needs `options.authorization` naming it"
        ),
        "{without_authorization}"
    );

    let signers = errors(
        "tls-authz-signers",
        &format!("{KEYS}\n      signers: [clientca]\n    exit: open_app"),
    );
    assert!(
        signers
            .contains("options.signers: a tls server here serves the certificates named in `keys`"),
        "{signers}"
    );

    let on_a_client = errors(
        "tls-authz-client",
        &format!(
            "{KEYS}
    exit: open_app
  tls_client:
    type: tls
    kind: client
    vault: server
    options:
      trust: [clientca]
      authorization: {{ x509_0: {{ credentials: {{ certificates: pem }} }} }}
    exit: open_app"
        ),
    );
    assert!(
        on_a_client.contains("options.authorization: `authorization` applies to tls servers"),
        "{on_a_client}"
    );
}
