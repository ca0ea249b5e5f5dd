//! `zilla start` once the command line is read: health endpoints, the first
//! engine, reloads on SIGHUP or a changed file, and the shutdown sequence.
//!
//! On SIGTERM (or SIGINT) readiness turns 503 first; listeners keep
//! accepting for `-P zilla.engine.shutdown.delay` seconds, so that a load
//! balancer or Kubernetes has time to stop sending; a second signal cuts the
//! delay short. Then every generation drains: listeners close, sessions are
//! told (MQTT DISCONNECT 0x8B), and whatever is left after
//! `zilla.engine.shutdown.grace` is dropped.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use zilla_engine::{EngineProperties, Handover};

use crate::health::{self, Health};
use crate::reload::{Generations, Settings};
use crate::watch::{fingerprint, Watch};

/// Runs the configuration until SIGTERM or SIGINT.
pub(crate) async fn run(settings: Settings) -> anyhow::Result<()> {
    // Before anything slow: SIGHUP's default action would end the process.
    let mut signals = Signals::new()?;
    // Bad properties are reported with the configuration's errors, by the build.
    let properties = EngineProperties::parse(&settings.properties).unwrap_or_default();
    let health = Arc::new(Health::default());
    if let Some(endpoint) = &properties.health {
        // Up before the configuration loads: live, not yet ready.
        let address = health::serve(endpoint, health.clone()).await?;
        println!("health checks on http://{address}/health/live and /health/ready");
    }

    let before = fingerprint(vec![settings.config.clone()]).await;
    let engine = settings.build(Handover::default()).await?;
    let started = match engine.start().await {
        Ok(started) => started,
        Err(error) => anyhow::bail!("{}", settings.describe(error)),
    };
    // Once the configuration runs, before it says ready; never a failed
    // start: without its socket the host runs on, warned.
    let _admin = crate::admin::socket_path(&settings.properties)
        .and_then(|path| crate::admin::server::open(&path));
    {
        let mut stdout = std::io::stdout().lock();
        for binding in &started {
            writeln!(stdout, "started {binding}")?;
        }
        writeln!(stdout, "zilla {} ready", engine.namespace())?;
        stdout.flush()?;
    }
    health.set_ready();
    let mut generations = Generations::new(engine, &started);
    let mut watch = match properties.config_watch {
        true => {
            let mut watch = Watch::new(before.clone(), properties.config_poll);
            watch.loaded(before, generations.files()).await;
            Some(watch)
        }
        false => None,
    };

    let signal = loop {
        tokio::select! {
            signal = signals.recv() => match signal {
                Signal::Hangup => generations.reload("SIGHUP", &settings, watch.as_mut()).await,
                stop => break stop,
            },
            changed = changed(&mut watch) => {
                let why = format!("a change to {}", shown(&changed));
                generations.reload(&why, &settings, watch.as_mut()).await;
            }
        }
    };

    health.set_draining();
    let namespace = generations.namespace().to_owned();
    println!("zilla {namespace} stopping on {signal}");
    let delay = properties.shutdown_delay;
    if !delay.is_zero() {
        println!(
            "zilla {namespace} not ready; listeners close in {} s",
            delay.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            again = signals.recv() => println!("zilla {namespace} closing listeners now on {again}"),
        }
    }
    let abandoned = generations.shutdown().await;
    if abandoned > 0 {
        println!(
            "zilla {namespace} stopped; {abandoned} connection(s) did not finish within the grace period"
        );
    } else {
        println!("zilla {namespace} stopped");
    }
    Ok(())
}

/// The next change to the watched files; never, when not watching.
async fn changed(watch: &mut Option<Watch>) -> Vec<PathBuf> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

fn shown(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

/// The signals the host acts on.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Interrupt,
    Terminate,
    Hangup,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt if cfg!(unix) => "SIGINT",
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        })
    }
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Interrupt,
            _ = self.terminate.recv() => Signal::Terminate,
            _ = self.hangup.recv() => Signal::Hangup,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
