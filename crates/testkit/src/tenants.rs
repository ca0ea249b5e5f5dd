//! The tenants example (`examples/mqtt.proxy.tenants`) as tests and
//! benchmarks configure it: its guards, and a proxy whose mqtt server takes
//! the token from the CONNECT user name and binds every topic to the
//! token's `tenant`.

use crate::clients::repo_root;

/// The example's `guards:` body (the key its tokens are signed with).
pub fn tenants_guards() -> String {
    let path = repo_root().join("examples/mqtt.proxy.tenants/zilla.yaml");
    let example = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    example
        .split("guards:\n")
        .nth(1)
        .and_then(|rest| rest.split("bindings:\n").next())
        .expect("the tenants example has guards before bindings")
        .to_owned()
}

/// `north_tcp_server -> north_mqtt_server -> mqtt_client -> tcp_client`
/// (the broker on `broker`), the mqtt server with the example's
/// authorization and routes to `tenants/{tenant}/#`; `options` goes under
/// the server's `options:` (indented six spaces), besides its authorization.
pub fn tenant_bindings(options: &str, broker: u16) -> String {
    format!(
        r#"bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
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
{options}
    routes:
      - when:
          - publish:
              - topic: tenants/{{tenant}}/#
                params:
                  tenant: ${{guarded['authn_jwt'].attributes.tenant}}
          - subscribe:
              - topic: tenants/{{tenant}}/#
                params:
                  tenant: ${{guarded['authn_jwt'].attributes.tenant}}
        exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker} }}
"#
    )
}
