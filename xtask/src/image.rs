//! `cargo xtask image [--tag NAME] [--engine podman|docker]`: builds the
//! container image from `Containerfile` with podman or docker, whichever is
//! installed (podman first: it needs no daemon), and prints the command it
//! runs so that it can be repeated by hand or in another pipeline.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The tag when none is given: the workspace version, so images of
/// different releases do not overwrite each other.
const DEFAULT_TAG: &str = concat!("zilla:", env!("CARGO_PKG_VERSION"));
const ENGINES: [&str; 2] = ["podman", "docker"];

pub(crate) fn image(args: &[String]) -> Result<()> {
    let mut tag = DEFAULT_TAG.to_owned();
    let mut engine = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tag" => tag = args.next().context("--tag needs a NAME")?.clone(),
            "--engine" => {
                let name = args.next().context("--engine needs podman or docker")?;
                if !ENGINES.contains(&name.as_str()) {
                    bail!("--engine must be podman or docker, not `{name}`");
                }
                engine = Some(name.clone());
            }
            other => bail!("unknown argument `{other}`; usage: cargo xtask image [--tag NAME] [--engine podman|docker]"),
        }
    }
    let engine = match engine {
        Some(engine) if crate::which(&engine) => engine,
        Some(engine) => bail!("{engine} is not installed (not on PATH)"),
        None => match ENGINES.into_iter().find(|e| crate::which(e)) {
            Some(engine) => engine.to_owned(),
            None => bail!(
                "neither podman nor docker is installed; install one (e.g. `apt-get install podman`) \
                 or build elsewhere with `docker build -f Containerfile -t {tag} .` from the workspace root"
            ),
        },
    };
    // docker is a client: without its daemon the build fails after a
    // confusing wait, so ask first and say what is missing.
    if engine == "docker" {
        let reachable = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            bail!(
                "docker is installed but its daemon is not reachable (`docker info` fails); \
                 start it (e.g. `systemctl start docker`) or use podman, then run \
                 `docker build -f Containerfile -t {tag} .` or this task again"
            );
        }
    }
    crate::run(
        "image build",
        Command::new(&engine).args(["build", "-f", "Containerfile", "-t", &tag, "."]),
    )?;
    println!("\nimage: built {tag}; run it with the configuration directory mounted at /etc/zilla (docs/deployment.md)");
    Ok(())
}
