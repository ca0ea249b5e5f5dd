//! The commands' side of the admin socket: `zilla sessions`, `zilla
//! disconnect` and `zilla dump`, which find the host by the same
//! `-P zilla.engine.admin.socket` it was started with.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context};
use zilla_engine::admin::{DumpRequest, SessionInfo};

use super::{socket_path, DumpSummary, Request};

/// What every command takes to find the host.
#[derive(Debug, clap::Args)]
pub(crate) struct HostArgs {
    /// An engine property, as the host was started with; only
    /// `zilla.engine.admin.socket=<path>` is read.
    #[arg(short = 'P', long = "property", value_name = "NAME=VALUE", value_parser = crate::property::parse_property)]
    properties: Vec<(String, String)>,
}

/// `zilla sessions`.
#[derive(Debug, clap::Args)]
pub(crate) struct SessionsArgs {
    /// Only client ids matching this glob (`*`, `?`).
    #[arg(long = "client-id", value_name = "GLOB")]
    client_id: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    host: HostArgs,
}

/// `zilla disconnect`.
#[derive(Debug, clap::Args)]
pub(crate) struct DisconnectArgs {
    /// The client id of the sessions to end.
    client_id: String,
    #[command(flatten)]
    host: HostArgs,
}

/// `zilla dump`.
#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// Where the pcap goes: a file, or `-` for stdout (`| wireshark -k -i -`).
    #[arg(short = 'w', value_name = "FILE")]
    write: String,
    /// Only the sessions of this mqtt server binding.
    #[arg(long)]
    binding: Option<String>,
    /// Only sessions whose client id matches this glob.
    #[arg(long = "client-id", value_name = "ID")]
    client_id: Option<String>,
    /// Only clients from this network (`10.0.0.0/8`, or one address).
    #[arg(long, value_name = "CIDR")]
    source: Option<String>,
    /// Only messages whose topic matches this filter.
    #[arg(long, value_name = "FILTER")]
    topic: Option<String>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S", conflicts_with = "count")]
    duration: Option<f64>,
    /// Stop after this many packets.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Keep passwords and authentication data as they were.
    #[arg(long)]
    unredacted: bool,
    #[command(flatten)]
    host: HostArgs,
}

fn connect(host: &HostArgs, request: &Request) -> anyhow::Result<BufReader<UnixStream>> {
    let Some(path): Option<PathBuf> = socket_path(&host.properties) else {
        bail!("the admin socket is turned off (-P zilla.engine.admin.socket= is empty)");
    };
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach a zilla host at {} (is one running in this directory, or started with \
             another -P zilla.engine.admin.socket?)",
            path.display()
        )
    })?;
    let line = serde_json::to_string(request)?;
    // A host that refuses may close before taking the request in: its
    // answer, already sent, says why; the failed write would not.
    if let Err(error) = stream.write_all(format!("{line}\n").as_bytes()) {
        tracing::debug!("admin request not fully written: {error}");
    }
    Ok(BufReader::new(stream))
}

/// Reads one JSON answer line; an `error` answer is an error.
fn answer(reader: &mut BufReader<UnixStream>) -> anyhow::Result<serde_json::Value> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.is_empty() {
        bail!("the host closed the admin connection without answering");
    }
    let value: serde_json::Value = serde_json::from_str(&line)?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{error}");
    }
    Ok(value)
}

/// Lists the live sessions.
pub(crate) fn sessions(args: SessionsArgs) -> anyhow::Result<()> {
    let request = Request::Sessions {
        client_id: args.client_id,
    };
    let mut reader = connect(&args.host, &request)?;
    let value = answer(&mut reader)?;
    let sessions: Vec<SessionInfo> = serde_json::from_value(value["sessions"].clone())?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&sessions)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<16} {:<22} {:<10} {:>8} {:>8} {:<20} UPSTREAMS",
        "CLIENT ID", "IDENTITY", "PEER", "PROTOCOL", "IN", "OUT", "SINCE"
    )?;
    for s in &sessions {
        writeln!(
            out,
            "{:<24} {:<16} {:<22} {:<10} {:>8} {:>8} {:<20} {}",
            s.client_id,
            s.identity.as_deref().unwrap_or("-"),
            s.peer.as_deref().unwrap_or("-"),
            s.protocol,
            s.inflight_in,
            s.inflight_out,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.since)
            ),
            s.upstreams.join(",")
        )?;
    }
    writeln!(out, "{} session(s)", sessions.len())?;
    Ok(())
}

/// Ends the sessions with a client id.
pub(crate) fn disconnect(args: DisconnectArgs) -> anyhow::Result<()> {
    let request = Request::Disconnect {
        client_id: args.client_id.clone(),
    };
    let mut reader = connect(&args.host, &request)?;
    let value = answer(&mut reader)?;
    let told = value["disconnected"].as_u64().unwrap_or(0);
    if told == 0 {
        bail!("no session with client id {:?}", args.client_id);
    }
    println!(
        "disconnected {told} session(s) with client id {}",
        args.client_id
    );
    Ok(())
}

/// Writes a capture until the host ends it (duration, count), or until
/// SIGINT or SIGTERM, which stop it cleanly: what is queued is written,
/// and the summary says what was dropped.
pub(crate) fn dump(args: DumpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dump_async(args))
}

async fn dump_async(args: DumpArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    use tokio::signal::unix::{signal, SignalKind};

    let request = Request::Dump {
        filter: DumpRequest {
            binding: args.binding,
            client_id: args.client_id,
            source: args.source,
            topic: args.topic,
            unredacted: args.unredacted,
        },
        duration: args.duration,
        count: args.count,
    };
    let stream = connect(&args.host, &request)?.into_inner();
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let (read, mut stop) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let value: serde_json::Value = serde_json::from_str(&line)
        .map_err(|_| anyhow::anyhow!("the host closed the admin connection without answering"))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{error}");
    }
    let mut out: std::pin::Pin<Box<dyn tokio::io::AsyncWrite>> = match args.write.as_str() {
        "-" => Box::pin(tokio::io::stdout()),
        path => Box::pin(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot write {path}"))?,
        ),
    };
    eprintln!("zilla dump: capturing to {}", args.write);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stopping = false;
    let mut chunk = Vec::new();
    loop {
        if !stopping {
            // Waiting for bytes is cancel-safe (`fill_buf` takes none);
            // reading a chunk's length would not be.
            tokio::select! {
                ready = reader.fill_buf() => { ready?; }
                _ = interrupt.recv() => stopping = true,
                _ = terminate.recv() => stopping = true,
            }
            if stopping {
                stop.write_all(b"stop\n").await?;
            }
        }
        let mut length = [0u8; 4];
        reader.read_exact(&mut length).await?;
        let n = u32::from_be_bytes(length) as usize;
        if n == 0 {
            break;
        }
        chunk.resize(n, 0);
        reader.read_exact(&mut chunk).await?;
        // Flushed as it comes: a capture read while it grows, or piped
        // into Wireshark, sees every packet at once.
        out.write_all(&chunk).await?;
        out.flush().await?;
    }
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let summary: DumpSummary = serde_json::from_str(&line)?;
    eprintln!(
        "zilla dump: {} packets captured, {} segments dropped (the reader fell behind)",
        summary.captured, summary.dropped
    );
    Ok(())
}
