//! `edgefleet-agent`: the device daemon as a lean binary of its own (no
//! compiler, no server), for small ARM boards.
//!
//! ```text
//! edgefleet-agent --config /etc/edgefleet/agent.toml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The edgefleet device agent: signed model updates over MQTT, local
/// inference API, telemetry. Settings come from defaults, then --config,
/// then EDGEFLEET_* environment variables (see agent.sample.toml).
#[derive(Parser, Debug)]
#[command(name = "edgefleet-agent", version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Install this package from a file (factory provisioning, or an update
    /// carried by hand) instead of running: verified exactly as an
    /// over-the-air update, against --manifest. Then exit.
    #[arg(long, value_name = "PACKAGE", requires = "manifest")]
    install: Option<PathBuf>,
    /// The signed manifest for --install.
    #[arg(long, value_name = "MANIFEST", requires = "install")]
    manifest: Option<PathBuf>,
    /// Print this device's public key (creating the key on first use), the
    /// one to give the fleet server at enrollment, and exit.
    #[arg(long)]
    print_device_key: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    edgefleet_agent::logging::init(args.log_json);
    let cfg = match edgefleet_agent::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_device_key {
        return match edgefleet_agent::store::Store::open(&cfg.state_dir).and_then(|s| s.device_key()) {
            Ok(k) => {
                println!("{}", edgefleet_protocol::hex32(&k.public().0));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let (Some(pkg), Some(manifest)) = (&args.install, &args.manifest) {
        let result = std::fs::read(pkg)
            .and_then(|p| Ok((p, std::fs::read(manifest)?)))
            .map_err(anyhow::Error::from)
            .and_then(|(p, m)| edgefleet_agent::install_local(&cfg, &p, &m));
        return match result {
            Ok(event) => {
                println!("{event:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match edgefleet_agent::block_on_until_signal(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
