//! Engine properties (`zilla start -P zilla.engine.<name>=<value>`).
//!
//! The engine reads the shutdown grace period itself; the others describe how
//! a host runs the engine (health checks, the delay before listeners close,
//! watching the configuration) and are checked here so that every
//! `zilla.engine.*` name has one place that knows it, and a mistyped one is a
//! configuration error rather than silently ignored.

use std::time::Duration;

use crate::config::{quoted_list, ConfigError};

/// Seconds that open connections get to finish after shutdown begins.
pub const PROPERTY_SHUTDOWN_GRACE: &str = "zilla.engine.shutdown.grace";
/// Seconds between readiness turning 503 on SIGTERM and listeners closing.
pub const PROPERTY_SHUTDOWN_DELAY: &str = "zilla.engine.shutdown.delay";
/// Port of the health endpoints (`/health/live`, `/health/ready`); none when unset.
pub const PROPERTY_HEALTH_PORT: &str = "zilla.engine.health.port";
/// Address the health endpoints listen on.
pub const PROPERTY_HEALTH_HOST: &str = "zilla.engine.health.host";
/// Whether the host reloads when `zilla.yaml` or a vault file changes.
pub const PROPERTY_CONFIG_WATCH: &str = "zilla.engine.config.watch";
/// Seconds between two looks at the watched files.
pub const PROPERTY_CONFIG_POLL: &str = "zilla.engine.config.poll";
/// The host's admin socket (`zilla sessions`, `disconnect`, `dump`);
/// default `.zilla/admin.sock`, none when empty. Read by the host.
pub const PROPERTY_ADMIN_SOCKET: &str = "zilla.engine.admin.socket";

const ENGINE_PROPERTIES: &[&str] = &[
    PROPERTY_SHUTDOWN_GRACE,
    PROPERTY_SHUTDOWN_DELAY,
    PROPERTY_HEALTH_PORT,
    PROPERTY_HEALTH_HOST,
    PROPERTY_CONFIG_WATCH,
    PROPERTY_CONFIG_POLL,
    PROPERTY_ADMIN_SOCKET,
];

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// With health checks, long enough for a load balancer or Kubernetes
/// endpoints to see the 503 (or the pod terminating) and stop sending.
const DEFAULT_SHUTDOWN_DELAY_WITH_HEALTH: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_HOST: &str = "0.0.0.0";
const DEFAULT_CONFIG_POLL: Duration = Duration::from_secs(1);

/// Where the health endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEndpoint {
    /// Host name or address, default `0.0.0.0` (probes come from the node).
    pub host: String,
    /// The port; 0 picks a free one.
    pub port: u16,
}

/// The `zilla.engine.*` properties, checked, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProperties {
    /// How long open connections get to finish once draining (default 5 s).
    pub shutdown_grace: Duration,
    /// How long readiness reports 503 before listeners close on SIGTERM
    /// (default 2 s with health endpoints, else 0).
    pub shutdown_delay: Duration,
    /// The health endpoints, when enabled.
    pub health: Option<HealthEndpoint>,
    /// Whether to reload on a change of the watched files (default true).
    pub config_watch: bool,
    /// How often the watched files are looked at (default 1 s).
    pub config_poll: Duration,
}

impl EngineProperties {
    /// Reads the `zilla.engine.*` entries of `properties` (others are left
    /// to plugins); every problem is reported, at path `-P <name>`.
    pub fn parse(properties: &[(String, String)]) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut grace = None;
        let mut delay = None;
        let mut health_port = None;
        let mut health_host = None;
        let mut watch = None;
        let mut poll = None;
        for (name, value) in properties {
            let mut error = |message: String| {
                errors.push(ConfigError {
                    path: format!("-P {name}"),
                    line: None,
                    message,
                })
            };
            match name.as_str() {
                PROPERTY_SHUTDOWN_GRACE => grace = seconds(value, true).map_err(&mut error).ok(),
                PROPERTY_SHUTDOWN_DELAY => delay = seconds(value, true).map_err(&mut error).ok(),
                PROPERTY_CONFIG_POLL => poll = seconds(value, false).map_err(&mut error).ok(),
                PROPERTY_HEALTH_PORT => match value.parse::<u16>() {
                    Ok(port) => health_port = Some(port),
                    Err(_) => error(format!("expected a port number, found `{value}`")),
                },
                PROPERTY_HEALTH_HOST if value.is_empty() => {
                    error("expected a host name or address".to_owned())
                }
                PROPERTY_HEALTH_HOST => health_host = Some(value.clone()),
                // Any path, or empty for none: the host reads it.
                PROPERTY_ADMIN_SOCKET => {}
                PROPERTY_CONFIG_WATCH => match value.as_str() {
                    "true" => watch = Some(true),
                    "false" => watch = Some(false),
                    _ => error(format!("expected `true` or `false`, found `{value}`")),
                },
                other if other.starts_with("zilla.engine.") => error(format!(
                    "unknown engine property; known engine properties: {}",
                    quoted_list(ENGINE_PROPERTIES)
                )),
                _ => {}
            }
        }
        if health_host.is_some() && health_port.is_none() && errors.is_empty() {
            errors.push(ConfigError {
                path: format!("-P {PROPERTY_HEALTH_HOST}"),
                line: None,
                message: format!("health endpoints need `{PROPERTY_HEALTH_PORT}` as well"),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let health = health_port.map(|port| HealthEndpoint {
            host: health_host.unwrap_or_else(|| DEFAULT_HEALTH_HOST.to_owned()),
            port,
        });
        let default_delay = if health.is_some() {
            DEFAULT_SHUTDOWN_DELAY_WITH_HEALTH
        } else {
            Duration::ZERO
        };
        Ok(Self {
            shutdown_grace: grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            shutdown_delay: delay.unwrap_or(default_delay),
            health,
            config_watch: watch.unwrap_or(true),
            config_poll: poll.unwrap_or(DEFAULT_CONFIG_POLL),
        })
    }
}

impl Default for EngineProperties {
    fn default() -> Self {
        Self::parse(&[]).expect("no properties, no errors")
    }
}

/// A number of seconds: `0` allowed or not.
fn seconds(value: &str, zero: bool) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (seconds > 0.0 || zero && seconds == 0.0) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ if zero => Err(format!("expected a number of seconds, found `{value}`")),
        _ => Err(format!(
            "expected a number of seconds above 0, found `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EngineProperties, Vec<String>> {
        let owned: Vec<_> = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        EngineProperties::parse(&owned)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_depend_on_health_checks() {
        let plain = parse(&[]).unwrap();
        assert_eq!(plain.shutdown_grace, Duration::from_secs(5));
        assert_eq!(plain.shutdown_delay, Duration::ZERO);
        assert_eq!(plain.health, None);
        assert!(plain.config_watch);
        assert_eq!(plain.config_poll, Duration::from_secs(1));

        let probed = parse(&[(PROPERTY_HEALTH_PORT, "8080")]).unwrap();
        assert_eq!(probed.shutdown_delay, Duration::from_secs(2));
        assert_eq!(
            probed.health,
            Some(HealthEndpoint {
                host: "0.0.0.0".into(),
                port: 8080
            })
        );
        let quick = parse(&[
            (PROPERTY_HEALTH_PORT, "8080"),
            (PROPERTY_SHUTDOWN_DELAY, "0"),
            (PROPERTY_CONFIG_WATCH, "false"),
            ("zilla.binding.tls.handshake.timeout", "3"),
        ])
        .unwrap();
        assert_eq!(quick.shutdown_delay, Duration::ZERO);
        assert!(!quick.config_watch);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let errors = parse(&[
            (PROPERTY_SHUTDOWN_GRACE, "soon"),
            (PROPERTY_HEALTH_PORT, "70000"),
            (PROPERTY_CONFIG_POLL, "0"),
            (PROPERTY_CONFIG_WATCH, "yes"),
            ("zilla.engine.helth.port", "1"),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[0].contains(
            "-P zilla.engine.shutdown.grace: expected a number of seconds, found `soon`"
        ));
        assert!(errors[1].contains("expected a port number, found `70000`"));
        assert!(errors[2].contains("above 0"));
        assert!(errors[4].contains("unknown engine property; known engine properties:"));
        assert!(errors[4].contains("`zilla.engine.health.port`"));
    }

    #[test]
    fn a_health_host_needs_a_port() {
        let errors = parse(&[(PROPERTY_HEALTH_HOST, "127.0.0.1")]).unwrap_err();
        assert!(
            errors[0].contains("need `zilla.engine.health.port`"),
            "{errors:?}"
        );
    }
}
