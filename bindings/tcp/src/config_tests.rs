//! What a tcp binding accepts at startup, and how it says what it refuses.

use zilla_engine::Engine;

fn errors(yaml: &str, properties: &[(&str, &str)]) -> String {
    let mut builder = Engine::from_yaml(yaml);
    for (name, value) in properties {
        builder = builder.property(*name, *value);
    }
    match builder.build() {
        Ok(_) => String::new(),
        Err(errors) => errors.to_string(),
    }
}

fn client(options: &str) -> String {
    format!(
        "
name: tcp-config
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {options}
"
    )
}

fn server(options: &str) -> String {
    format!(
        "
name: tcp-config
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {options}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: 1883 }}
"
    )
}

#[test]
fn clients_take_hosts_with_or_without_a_shared_port() {
    assert_eq!(
        errors(
            &client("{ hosts: [broker-a:1883, broker-b, \"[::1]:1884\"], port: 1883 }"),
            &[]
        ),
        ""
    );
    assert_eq!(
        errors(
            &client("{ host: 127.0.0.1, port: 1883 }"),
            &[("zilla.binding.tcp.connect.timeout", "0.5")]
        ),
        ""
    );
}

#[test]
fn client_mistakes_are_explained_where_they_are() {
    let both = errors(&client("{ host: a, hosts: [b:1883], port: 1883 }"), &[]);
    assert!(
        both.contains("bindings.south_tcp_client.options.hosts: give `host` or `hosts`, not both"),
        "{both}"
    );
    let portless = errors(&client("{ hosts: [a:1883, b] }"), &[]);
    assert!(
        portless.contains(
            "bindings.south_tcp_client.options.hosts[1]: `b` names no port, and there is no `port`"
        ),
        "{portless}"
    );
    let empty = errors(&client("{ hosts: [] }"), &[]);
    assert!(empty.contains("`hosts` needs at least one"), "{empty}");
    let proxied = errors(
        &client("{ host: a, port: 1, proxy-protocol: { from: [10.0.0.0/8] } }"),
        &[],
    );
    assert!(
        proxied.contains("`proxy-protocol` applies to tcp servers only"),
        "{proxied}"
    );
    let timeout = errors(
        &client("{ host: a, port: 1 }"),
        &[("zilla.binding.tcp.connect.timeout", "soon")],
    );
    assert!(
        timeout.contains("-P zilla.binding.tcp.connect.timeout: expected seconds, found `soon`"),
        "{timeout}"
    );
}

#[test]
fn server_mistakes_are_explained_where_they_are() {
    let hosts = errors(&server("{ port: 0, hosts: [a:1] }"), &[]);
    assert!(
        hosts.contains("`hosts` applies to tcp clients only"),
        "{hosts}"
    );
    let proxied = "{ port: 0, proxy-protocol: { mode: optional, from: [10.0.0.0/8] } }";
    assert_eq!(errors(&server(proxied), &[]), "");
    let timeout = errors(
        &server(proxied),
        &[("zilla.binding.tcp.proxy.protocol.timeout", "0")],
    );
    assert!(
        timeout.contains("-P zilla.binding.tcp.proxy.protocol.timeout: expected seconds"),
        "{timeout}"
    );
    let untrusting = errors(
        &server("{ port: 0, proxy-protocol: { mode: required } }"),
        &[],
    );
    assert!(untrusting.contains("missing field `from`"), "{untrusting}");
}
