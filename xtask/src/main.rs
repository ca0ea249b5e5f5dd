//! Project automation, run as `cargo xtask <task>`:
//!
//! - `ci`: format check, clippy with warnings denied, every test, the fuzz
//!   targets' build, docs.
//! - `demo [--once]`: builds the host, starts a local mosquitto on a free port,
//!   runs the seed example (`examples/mqtt.proxy.jwt`) in front of it, prints a
//!   fresh token and the commands that work with it, and shows a message going
//!   through.
//! - `bench [--quick] [--rounds N] [--idle N] [--sharded-idle N] [--storm N] [--connects N]
//!   [--baseline ZILLA] [--host ZILLA]
//!   [--only qos0,qos1,fan-in,latency,connect,validation,idle,idle-sharded,storm,tls,mtls]`: the proxy against mosquitto
//!   direct and HAProxy on loopback; writes `target/bench/report.md`.
//! - `token [--sub S] [--scope S] [--claim k=v]... [--expires-in SECONDS]
//!   [--key PEM] [--kid KID] [--issuer I] [--audience A]`: prints a signed JWT.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod bench;
mod demo_ws;
mod image;

use anyhow::{bail, Context, Result};
use zilla_testkit::{mosquitto_path, Mosquitto, ZillaProcess, MOSQUITTO_INSTALL};

const USAGE: &str = "usage: cargo xtask <ci | demo [--once] | bench [--quick] [--rounds N] [--idle N] [--storm N] | image [--tag NAME] [--engine podman|docker] | token [--sub S] [--scope S] [--claim k=v]... [--expires-in SECONDS] [--key PEM] [--kid KID] [--issuer I] [--audience A]>";

/// The example the demo runs: the seed configuration, verbatim.
/// The seed's proxy, also serving MQTT over WebSocket (7114) and secure
/// WebSocket (7143).
const DEMO_EXAMPLE: &str = "examples/mqtt.proxy.ws";
const DEMO_WS_PORT: u16 = 7114;
const DEMO_PORT: u16 = 7183;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => demo(args.iter().any(|a| a == "--once")),
        Some("bench") => bench::bench(&args[1..]),
        Some("image") => image::image(&args[1..]),
        Some("token") => {
            println!("{}", token(&args[1..])?);
            Ok(())
        }
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

/// Signs a token for the seed's guard (or another, with the options).
fn token(args: &[String]) -> Result<String> {
    let mut key = "examples/mqtt.proxy.jwt/private.pem".to_owned();
    let mut kid = "example".to_owned();
    let mut claims = serde_json::json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "device1",
        "scope": "mqtt:stream",
    });
    let mut expires_in = 3600u64;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--sub" => claims["sub"] = value()?.into(),
            "--scope" => claims["scope"] = value()?.into(),
            "--issuer" => claims["iss"] = value()?.into(),
            "--audience" => claims["aud"] = value()?.into(),
            "--expires-in" => {
                expires_in = value()?.parse().context("--expires-in takes seconds")?
            }
            "--key" => key = value()?,
            "--kid" => kid = value()?,
            "--claim" => {
                let claim = value()?;
                let (name, value) = claim
                    .split_once('=')
                    .with_context(|| format!("--claim takes name=value, found `{claim}`"))?;
                claims[name] = value.into();
            }
            other => bail!("unknown option `{other}`; {USAGE}"),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    claims["exp"] = (now + expires_in).into();
    let pem = std::fs::read(&key).with_context(|| format!("cannot read the signing key {key}"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid);
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&pem).context("not an RSA private key in PEM")?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
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
    let mut env = broker.env().to_vec();
    env.push(("KEYSTORE_PASSWORD", "generated".to_owned()));
    let mut zilla = ZillaProcess::start(Path::new("target/release/zilla"), &config, &env, &[])
        .map_err(anyhow::Error::msg)?;
    for line in zilla.output().stdout {
        println!("   {line}");
    }

    let token = token(&[])?;
    let bearer = format!("Bearer {token}");
    let cafile = Path::new(DEMO_EXAMPLE).join("tls/test-ca.pem");
    println!("\n== a token signed with {DEMO_EXAMPLE}/private.pem (scope mqtt:stream, valid 1 h):\n{token}");
    println!(
        "\n== a message published over TLS (port 7883) and received over plain MQTT (port {DEMO_PORT}), both through the proxy"
    );
    let published = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", "7883", "--cafile"])
        .arg(&cafile)
        .args([
            "-t",
            "zilla",
            "-m",
            "Hello, world",
            "-r",
            "-q",
            "1",
            "-u",
            &bearer,
        ])
        .status()
        .context("cannot run mosquitto_pub")?;
    if !published.success() {
        bail!("mosquitto_pub through the proxy failed ({published})");
    }
    let received = Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &DEMO_PORT.to_string(),
            "-t",
            "zilla",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ])
        .args(["-u", &bearer])
        .output()
        .context("cannot run mosquitto_sub")?;
    print!(
        "   mosquitto_sub received: {}",
        String::from_utf8_lossy(&received.stdout)
    );
    if !received.status.success() {
        bail!(
            "mosquitto_sub through the proxy failed ({})",
            received.status
        );
    }
    println!(
        "\n== the same message received over WebSocket (port {DEMO_WS_PORT}), the token in the URL as a browser sends it"
    );
    let (topic, payload) = demo_ws::receive_one(DEMO_WS_PORT, &token, "zilla")?;
    println!("   WebSocket subscriber received: {topic} {payload}");
    let refused = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &DEMO_PORT.to_string(),
            "-t",
            "zilla",
            "-m",
            "no token",
        ])
        .output()
        .context("cannot run mosquitto_pub")?;
    println!(
        "   without a token: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    );

    println!("\n== what the proxy logged (its stdout exporter):");
    for line in zilla.output().stdout.iter().filter(|l| {
        [" MQTT_", " TLS_", " HTTP_", " WS_"]
            .iter()
            .any(|family| l.contains(family))
    }) {
        println!("   {line}");
    }

    if once {
        let (status, _) = zilla
            .terminate(Duration::from_secs(10))
            .map_err(anyhow::Error::msg)?;
        println!("\n== demo done; zilla exited with {status}");
        return Ok(());
    }
    println!(
        "\n== the proxy keeps running; try it yourself (TOKEN is the token above):\n   \
         mosquitto_sub -h localhost -p {DEMO_PORT} -t 'zilla/#' -v -u \"Bearer $TOKEN\"\n   \
         mosquitto_pub -h localhost -p 7883 --cafile {} -t zilla/hello -m 'Hello, world' -u \"Bearer $TOKEN\"\n   \
         MQTT over WebSocket: ws://localhost:{DEMO_WS_PORT}/mqtt?access_token=$TOKEN (subprotocol mqtt), wss:// on 7143\n   \
         cargo xtask token --scope mqtt:stream --sub device2   # another token\n\
         Press Ctrl-C to stop.",
        cafile.display()
    );
    let status = zilla.wait()?;
    println!("zilla exited with {status}");
    Ok(())
}
