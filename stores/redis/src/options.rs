//! `stores.<name>.options` of a `redis` store, and what they resolve to.
//!
//! Options are checked when the configuration is built (a wrong url is a
//! configuration error, never a store that silently never answers), but
//! nothing connects then: the engine starts whether or not Redis is up.

use std::path::Path;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use serde::{Deserialize, Serialize};

/// How long a membership is leased for: a replica that dies without leaving
/// frees its members after this.
pub(crate) const LEASE: Duration = Duration::from_secs(15);
/// How often held memberships are renewed (three times per lease).
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often the replica says it is alive (and finds out whether the store
/// answers).
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a replica counts as alive after its last heartbeat.
pub(crate) const REPLICA_TTL: Duration = Duration::from_secs(15);

/// The options of a `redis` store.
///
/// ```yaml
/// stores:
///   fleet:
///     type: redis
///     options:
///       url: rediss://redis.internal:6380/0
///       username: zilla
///       password: ${{env.REDIS_PASSWORD}}
///       prefix: zilla
///       connect-timeout: 2
///       command-timeout: 0.25
///       tls:
///         ca: redis-ca.pem
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisOptions {
    /// One server: `redis://host:port[/db]`, or `rediss://...` for TLS.
    /// Exactly one of `url` and `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Redis Cluster: the URLs of some of its nodes (the rest is found
    /// from them), all `redis://` or all `rediss://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// The ACL user, when not `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Scalar>,
    /// The password (write `${{env.REDIS_PASSWORD}}`: an expression is
    /// resolved before the options are read; a password of digits reads as
    /// a number, which is taken as its text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Scalar>,
    /// What every key starts with, so that several configurations (or other
    /// users) can share one Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Seconds to wait for a connection to be made.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds any call waits for an answer before the store counts as
    /// unavailable (the caller then applies its policy).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: f64,
    /// How a `rediss://` server is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
}

/// `options.tls`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM file of the CA(s) that sign the server's certificate, relative
    /// to the configuration's directory; without it, the system's roots.
    pub ca: String,
}

/// A scalar read as text: what an `${{env.NAME}}` expression resolved to,
/// whatever YAML type the text reads as.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A whole number (`password: 1234`).
    Integer(i64),
    /// Anything else YAML reads as a number.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Integer(number) => number.to_string(),
            Self::Number(number) => number.to_string(),
            Self::Bool(value) => value.to_string(),
        }
    }
}

fn default_prefix() -> String {
    "zilla".to_owned()
}

fn default_connect_timeout() -> f64 {
    2.0
}

fn default_command_timeout() -> f64 {
    0.25
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: None,
            cluster: None,
            username: None,
            password: None,
            prefix: default_prefix(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            tls: None,
        }
    }
}

/// Where the store connects.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One server.
    Single(Box<ConnectionInfo>),
    /// Seed nodes of a cluster.
    Cluster(Vec<ConnectionInfo>),
}

/// The options, checked and resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    /// The CA PEM for `rediss://`, when not the system's roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    /// Where it connects, without credentials, for events.
    pub(crate) address: String,
    pub(crate) lease: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) heartbeat_every: Duration,
}

/// A problem with the options: the option's path under `options` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionsError {
    /// E.g. `options.url`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn problem(path: &str, message: impl Into<String>) -> OptionsError {
    OptionsError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn seconds(path: &str, value: f64) -> Result<Duration, OptionsError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| {
            problem(
                path,
                format!("must be a positive number of seconds, not {value}"),
            )
        })
}

fn connection_info(path: &str, url: &str) -> Result<(ConnectionInfo, bool), OptionsError> {
    let tls = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis") => false,
        Some("rediss") => true,
        _ => {
            return Err(problem(
                path,
                "must be a redis://host:port[/db] or rediss://host:port[/db] url",
            ))
        }
    };
    let info = url
        .into_connection_info()
        .map_err(|error| problem(path, format!("is not a redis url: {error}")))?;
    Ok((info, tls))
}

fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
        other => format!("redis://{other}"),
    }
}

impl RedisOptions {
    /// Checks the options and resolves them; `base_dir` is where a relative
    /// `tls.ca` is read from.
    pub(crate) fn settings(&self, base_dir: &Path) -> Result<Settings, OptionsError> {
        let (target, tls, address) = match (&self.url, &self.cluster) {
            (Some(url), None) => {
                let (info, tls) = connection_info("options.url", url)?;
                let address = address(&info);
                (Target::Single(Box::new(info)), tls, address)
            }
            (None, Some(seeds)) if !seeds.is_empty() => {
                let mut infos = Vec::new();
                let mut schemes = Vec::new();
                for (index, url) in seeds.iter().enumerate() {
                    let (info, tls) = connection_info(&format!("options.cluster[{index}]"), url)?;
                    infos.push(info);
                    schemes.push(tls);
                }
                if schemes.iter().any(|tls| *tls != schemes[0]) {
                    return Err(problem(
                        "options.cluster",
                        "every url must be redis:// or every url rediss://, not a mix",
                    ));
                }
                let address = format!(
                    "cluster {}",
                    infos.iter().map(address).collect::<Vec<_>>().join(", ")
                );
                (Target::Cluster(infos), schemes[0], address)
            }
            (None, Some(_)) => {
                return Err(problem("options.cluster", "must name at least one node"))
            }
            (Some(_), Some(_)) => {
                return Err(problem(
                    "options",
                    "give either url (one server) or cluster (a Redis Cluster), not both",
                ))
            }
            (None, None) => {
                return Err(problem(
                    "options",
                    "a redis store needs url (one server) or cluster (a Redis Cluster)",
                ))
            }
        };
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(problem(
                "options.prefix",
                "must be non-empty text without { or } (braces are the keys' hash tags)",
            ));
        }
        let ca_pem = match &self.tls {
            Some(_) if !tls => {
                return Err(problem(
                    "options.tls",
                    "tls needs a rediss:// url (redis:// is plain text)",
                ))
            }
            Some(options) => {
                let path = base_dir.join(&options.ca);
                let pem = std::fs::read(&path).map_err(|error| {
                    problem(
                        "options.tls.ca",
                        format!("cannot read {}: {error}", path.display()),
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(problem(
                        "options.tls.ca",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Settings {
            target,
            ca_pem,
            username: self.username.as_ref().map(Scalar::text),
            password: self.password.as_ref().map(Scalar::text),
            prefix: self.prefix.clone(),
            connect_timeout: seconds("options.connect-timeout", self.connect_timeout)?,
            command_timeout: seconds("options.command-timeout", self.command_timeout)?,
            address,
            lease: LEASE,
            renew_every: RENEW_EVERY,
            heartbeat_every: HEARTBEAT_EVERY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RedisOptions, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    fn settings(yaml: &str) -> Result<Settings, OptionsError> {
        parse(yaml).expect("options parse").settings(Path::new("."))
    }

    #[test]
    fn a_full_snippet_round_trips() {
        let yaml = "url: rediss://redis.internal:6380/2
username: zilla
password: secret
prefix: fleet
connect-timeout: 3
command-timeout: 0.5
tls:
  ca: redis-ca.pem
";
        let options = parse(yaml).unwrap();
        assert_eq!(options.password, Some(Scalar::Text("secret".into())));
        assert_eq!(options.command_timeout, 0.5);
        let again: RedisOptions = parse(&serde_yaml::to_string(&options).unwrap()).unwrap();
        assert_eq!(again, options);
    }

    #[test]
    fn defaults_are_zilla_two_seconds_and_a_quarter() {
        let settings = settings("url: redis://127.0.0.1:6379").unwrap();
        assert_eq!(settings.prefix, "zilla");
        assert_eq!(settings.connect_timeout, Duration::from_secs(2));
        assert_eq!(settings.command_timeout, Duration::from_millis(250));
        assert_eq!(settings.address, "redis://127.0.0.1:6379");
        assert!(matches!(settings.target, Target::Single(_)));
    }

    #[test]
    fn a_cluster_is_its_seed_urls() {
        let settings = settings("cluster: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]").unwrap();
        assert!(matches!(&settings.target, Target::Cluster(seeds) if seeds.len() == 2));
        assert_eq!(
            settings.address,
            "cluster redis://10.0.0.1:7000, redis://10.0.0.2:7000"
        );
    }

    #[test]
    fn a_password_of_digits_is_its_text() {
        let settings = settings("url: redis://h:1\npassword: 12345").unwrap();
        assert_eq!(settings.password.as_deref(), Some("12345"));
    }

    #[test]
    fn exactly_one_of_url_and_cluster() {
        let both = settings("url: redis://a:1\ncluster: [redis://b:1]").unwrap_err();
        assert_eq!(both.path, "options");
        assert!(both.message.contains("not both"), "{both:?}");
        let neither = settings("prefix: x").unwrap_err();
        assert!(neither.message.contains("needs url"), "{neither:?}");
        let empty = settings("cluster: []").unwrap_err();
        assert_eq!(empty.path, "options.cluster");
    }

    #[test]
    fn bad_urls_timeouts_and_prefixes_are_refused_with_their_path() {
        assert_eq!(settings("url: http://a:1").unwrap_err().path, "options.url");
        assert_eq!(
            settings("cluster: [redis://a:1, rediss://b:1]")
                .unwrap_err()
                .path,
            "options.cluster"
        );
        assert_eq!(
            settings("cluster: [redis://a:1, nope]").unwrap_err().path,
            "options.cluster[1]"
        );
        assert_eq!(
            settings("url: redis://a:1\ncommand-timeout: 0")
                .unwrap_err()
                .path,
            "options.command-timeout"
        );
        assert_eq!(
            settings("url: redis://a:1\nconnect-timeout: -1")
                .unwrap_err()
                .path,
            "options.connect-timeout"
        );
        assert_eq!(
            settings("url: redis://a:1\nprefix: 'a{b}'")
                .unwrap_err()
                .path,
            "options.prefix"
        );
    }

    #[test]
    fn tls_needs_rediss_and_a_readable_ca() {
        let plain = settings("url: redis://a:1\ntls: {ca: ca.pem}").unwrap_err();
        assert_eq!(plain.path, "options.tls");
        let missing = settings("url: rediss://a:1\ntls: {ca: /nonexistent/ca.pem}").unwrap_err();
        assert_eq!(missing.path, "options.tls.ca");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let options = parse("url: rediss://a:1\ntls: {ca: ca.pem}").unwrap();
        let settings = options.settings(dir.path()).unwrap();
        assert!(settings.ca_pem.is_some());
        assert_eq!(settings.address, "rediss://a:1");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse("url: redis://a:1\ndatabase: 2").is_err());
        assert!(parse("url: rediss://a:1\ntls: {ca: x, verify: false}").is_err());
    }
}
