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
    match edgefleet_agent::block_on_until_signal(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
