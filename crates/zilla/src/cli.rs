//! The command line: `zilla start`, `zilla metrics` and `zilla version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use zilla_engine::telemetry::{set_exception_traces, EVENT_TARGET};
use zilla_engine::{Engine, EventLayer};

use crate::reload::Settings;
use crate::run::run;

/// Runs zilla.yaml configurations: MQTT proxying, TLS, JWT, schema validation.
#[derive(Debug, Parser)]
#[command(name = "zilla", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the engine with a configuration.
    Start(StartArgs),
    /// Print the metrics of a running engine (scraped from the prometheus
    /// exporter its configuration names).
    Metrics(crate::metrics::MetricsArgs),
    /// Print the version and the plugin types this host offers.
    Version,
    /// List the live sessions of a running host (through its admin socket).
    Sessions(crate::admin::client::SessionsArgs),
    /// End the sessions with a client id (MQTT 5: DISCONNECT 0x98).
    Disconnect(crate::admin::client::DisconnectArgs),
    /// Write a pcap of the MQTT bytes of a running host's sessions.
    Dump(crate::admin::client::DumpArgs),
    /// Print the JSON Schema (draft-07) of zilla.yaml for the plugins this
    /// host offers, for editors and CI.
    Schema,
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", default_value = "zilla.yaml")]
    config: PathBuf,
    /// Worker threads (default: one per CPU).
    #[arg(short = 'w', long = "workers")]
    workers: Option<usize>,
    /// Log diagnostics at debug level on stderr.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Show the full chain of causes of errors in events and diagnostics.
    #[arg(short = 'e', long = "exception-traces")]
    exception_traces: bool,
    /// Print the configuration as built (what `asyncapi` bindings generate)
    /// as YAML, and exit.
    #[arg(long = "print-generated")]
    print_generated: bool,
    /// An engine property, e.g. `-P zilla.engine.shutdown.grace=10` or
    /// `-P zilla.engine.health.port=8080`; repeatable.
    #[arg(short = 'P', long = "property", value_name = "NAME=VALUE", value_parser = crate::property::parse_property)]
    properties: Vec<(String, String)>,
}

/// Parses the command line and runs it; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            print_version();
            ExitCode::SUCCESS
        }
        Command::Schema => crate::schema::main(),
        Command::Sessions(args) => report(crate::admin::client::sessions(args)),
        Command::Disconnect(args) => report(crate::admin::client::disconnect(args)),
        Command::Dump(args) => report(crate::admin::client::dump(args)),
        Command::Metrics(args) => match crate::metrics::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("zilla: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Start(args) => match start(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("zilla: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A command's outcome as its exit code, the error on stderr.
fn report(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zilla: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_version() {
    let registered = zilla_engine::registered();
    println!("zilla {}", env!("CARGO_PKG_VERSION"));
    let bindings: Vec<String> = registered
        .bindings
        .iter()
        .map(|(name, kinds)| {
            let kinds: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
            format!("{name} ({})", kinds.join(", "))
        })
        .collect();
    println!("bindings: {}", bindings.join(", "));
    for (family, names) in [
        ("guards", &registered.guards),
        ("vaults", &registered.vaults),
        ("catalogs", &registered.catalogs),
        ("stores", &registered.stores),
        ("models", &registered.models),
        ("exporters", &registered.exporters),
    ] {
        println!("{family}: {}", names.join(", "));
    }
}

fn init_tracing(verbose: bool) {
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    // Diagnostics go to stderr; telemetry events go to the configured exporters.
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbose)
        .with_filter(filter_fn(move |meta| {
            meta.target() != EVENT_TARGET && *meta.level() <= level
        }));
    let _ = tracing_subscriber::registry()
        .with(EventLayer)
        .with(diagnostics)
        .try_init();
}

fn start(args: StartArgs) -> anyhow::Result<()> {
    init_tracing(args.verbose);
    set_exception_traces(args.exception_traces);

    if args.print_generated {
        let mut builder = Engine::from_file(&args.config);
        for (name, value) in &args.properties {
            builder = builder.property(name, value);
        }
        let engine = builder.build()?;
        print!("{}", serde_yaml::to_string(engine.generated_config())?);
        return Ok(());
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("zilla-worker");
    if let Some(workers) = args.workers {
        anyhow::ensure!(workers > 0, "--workers must be at least 1");
        runtime.worker_threads(workers);
    }
    let runtime = runtime.build()?;
    runtime.block_on(run(Settings {
        config: args.config,
        properties: args.properties,
        exception_traces: args.exception_traces,
    }))
}
