//! Project automation, run as `cargo xtask <task>`:
//!
//! - `ci`: format check, clippy with warnings denied, every test, the fuzz
//!   targets' build, docs.
//! - `demo [--once]`: builds the host, starts a local mosquitto on a free port,
//!   runs the proxy example in front of it and shows a message going through.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zilla_testkit::{mosquitto_path, wait_for, Mosquitto, ZillaProcess, MOSQUITTO_INSTALL};

const USAGE: &str = "usage: cargo xtask <ci | demo [--once]>";

/// The example the demo runs; it grows with the product (the MQTT proxy now,
/// the seed's mqtt.proxy.jwt once the tls and jwt plugins land).
const DEMO_EXAMPLE: &str = "examples/mqtt.proxy";
const DEMO_PORT: u16 = 7183;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => demo(args.iter().any(|a| a == "--once")),
        _ => bail!("{USAGE}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(step: &str, command: &mut Command) -> Result<()> {
    println!("\n== {step}: {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {step}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn ci() -> Result<()> {
    run("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run("tests", cargo().args(["test", "--workspace"]))?;
    run(
        "fuzz targets build",
        cargo().args(["check", "--manifest-path", "fuzz/Cargo.toml"]),
    )?;
    run(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    println!("\nci: all checks passed");
    Ok(())
}

/// Finds mosquitto, installing it with apt-get where that is possible.
fn ensure_mosquitto() -> Result<()> {
    if mosquitto_path().is_some() && which("mosquitto_pub") && which("mosquitto_sub") {
        return Ok(());
    }
    if which("apt-get") && is_root() {
        println!("== installing mosquitto: {MOSQUITTO_INSTALL}");
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        run(
            "apt-get install",
            Command::new("apt-get").args([
                "install",
                "-y",
                "-qq",
                "mosquitto",
                "mosquitto-clients",
            ]),
        )?;
        return Ok(());
    }
    bail!("mosquitto is not installed; install it with `sudo {MOSQUITTO_INSTALL}` and run the demo again")
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn demo(once: bool) -> Result<()> {
    run(
        "build the host",
        cargo().args(["build", "--release", "-p", "zilla"]),
    )?;
    ensure_mosquitto()?;
    let broker = Mosquitto::start().map_err(anyhow::Error::msg)?;
    println!("\n== mosquitto listening on 127.0.0.1:{}", broker.port());

    let config = Path::new(DEMO_EXAMPLE).join("zilla.yaml");
    let env = [
        ("MOSQUITTO_BROKER_HOST", "127.0.0.1".to_owned()),
        ("MOSQUITTO_BROKER_PORT", broker.port().to_string()),
    ];
    let mut zilla = ZillaProcess::start(Path::new("target/release/zilla"), &config, &env, &[])
        .map_err(anyhow::Error::msg)?;
    for line in zilla.output().stdout {
        println!("   {line}");
    }

    let port = DEMO_PORT.to_string();
    println!(
        "\n== mosquitto_sub and mosquitto_pub, both through the proxy (port {port}), via mosquitto"
    );
    let subscriber = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "demo/hello",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run mosquitto_sub")?;
    // Publish until the subscriber has it: the first publish may precede its SUBSCRIBE.
    let mut subscriber = Some(subscriber);
    let received = wait_for(
        "the subscriber to receive the message",
        Duration::from_secs(10),
        || {
            let _ = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-t",
                    "demo/hello",
                    "-m",
                    "Hello, world",
                ])
                .status();
            let child = subscriber.as_mut()?;
            match child.try_wait() {
                Ok(Some(_)) => subscriber.take().and_then(|c| c.wait_with_output().ok()),
                _ => None,
            }
        },
    )
    .map_err(anyhow::Error::msg)?;
    print!(
        "   mosquitto_sub received: {}",
        String::from_utf8_lossy(&received.stdout)
    );

    if once {
        let (status, _) = zilla
            .terminate(Duration::from_secs(10))
            .map_err(anyhow::Error::msg)?;
        println!("\n== demo done; zilla exited with {status}");
        return Ok(());
    }
    println!(
        "\n== the proxy keeps running; try it yourself:\n   \
         mosquitto_sub -h localhost -p {port} -t 'demo/#' -v\n   \
         mosquitto_pub -h localhost -p {port} -t demo/hello -m 'Hello, world'\n\
         Press Ctrl-C to stop."
    );
    let status = zilla.wait()?;
    println!("zilla exited with {status}");
    Ok(())
}
