//! `edgefleet agent`: the device daemon, from the host tool (the lean
//! `edgefleet-agent` binary is the same code without compiler or server).

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `edgefleet agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (TOML); then EDGEFLEET_* environment variables apply.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Print this device's public key (creating the key on first use), the one to give the
    /// fleet server at enrollment (`edgefleet devices enroll --public-key`), and exit.
    #[arg(long)]
    pub print_device_key: bool,
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn run(a: Args) -> Result<()> {
    edgefleet_agent::logging::init(a.log_json);
    let cfg = edgefleet_agent::Config::load(a.config.as_deref())?;
    if a.print_device_key {
        let key = edgefleet_agent::store::Store::open(&cfg.state_dir)?.device_key()?;
        outln!("{}", edgefleet_protocol::hex32(&key.public().0));
        return Ok(());
    }
    edgefleet_agent::block_on_until_signal(cfg)
}
