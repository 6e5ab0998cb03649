//! `edgefleet`, the host tool: compile ONNX models into int8 packages,
//! inspect them, run them on `.npy` inputs and benchmark them; sign
//! updates; run the agent or the fleet server; publish and roll out models.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`edgefleet inspect x.efm | head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?;
    }};
}

mod cmd;
mod npy;
#[cfg(feature = "simulate")]
mod sim;

/// edgefleet: a tiny int8 inference runtime and the tools around it.
///
/// Typical flow:
///
///   edgefleet compile model.onnx --calibration calib.npy -o model.efm
///
///   edgefleet inspect model.efm
///
///   edgefleet run model.efm --input x.npy -o y.npy
///
///   edgefleet bench model.efm
///
///   edgefleet server                                  (fleet server on embedded defaults)
///
///   edgefleet publish model.efm --model kws --version 2.0
///
///   edgefleet rollout start --model kws --version 2.0 --group field
#[derive(Parser, Debug)]
#[command(name = "edgefleet", version, about, long_about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile an ONNX model into an int8 package (.efm).
    ///
    /// QDQ-quantized models (QuantizeLinear/DequantizeLinear around float ops, e.g. from tf2onnx
    /// or onnxruntime's quantize_static) keep their integers, scales and zero points exactly.
    /// fp32 models need --calibration: representative inputs from which activation ranges are
    /// measured; weights are quantized per output channel.
    ///
    /// Examples:
    ///
    ///   edgefleet compile kws_int8_from_tflite.onnx -o kws.efm
    ///
    ///   edgefleet compile vww_fp32.onnx --calibration vww_calib_u8.npy --calibration-scale 0.00392156862745098 -o vww.efm
    #[command(verbatim_doc_comment)]
    #[cfg(feature = "compiler")]
    Compile(cmd::compile::Args),
    /// Show what a package holds: inputs, outputs, ops, memory, metadata.
    Inspect(cmd::inspect::Args),
    /// Run a package on inputs from an .npy file and print or save the outputs.
    ///
    /// The input may be int8 (used as is) or float (quantized with the input's scale and zero
    /// point). A leading dimension of N samples runs the model N times.
    Run(cmd::run::Args),
    /// Measure inference latency: warm-up, then N timed runs; median, p90, p99.
    Bench(cmd::bench::Args),
    /// Manage signing keys and the root of trust.
    #[command(subcommand)]
    Keys(cmd::keys::Keys),
    /// Sign an update manifest for a package (length, SHA-256, hardware, counter, expiry).
    ///
    /// Example: edgefleet sign kws.efm --key release.key --hardware rpi4 --counter 2 --version 2.0
    #[command(verbatim_doc_comment)]
    Sign(cmd::sign::SignArgs),
    /// Verify a manifest (and optionally its package) as a device would.
    Verify(cmd::sign::VerifyArgs),
    /// Run the device agent (the same daemon as the lean `edgefleet-agent` binary).
    #[cfg(feature = "agent")]
    Agent(cmd::agent::Args),
    /// Run the fleet server: registry, devices, rollouts, telemetry, API, dashboard.
    ///
    /// With no flags: one process, a SQLite file and an embedded MQTT broker in ./edgefleet-data,
    /// the API and dashboard on http://127.0.0.1:8080/. The first start writes an API token to
    /// edgefleet-data/admin.token. Scale out with --database postgres://... and
    /// --mqtt-url mqtt://... (several replicas may share one database).
    #[cfg(feature = "server")]
    Server(Box<cmd::server::Args>),
    /// Upload a package to a fleet server's registry as a new model version.
    ///
    /// Example: edgefleet publish kws.efm --model kws --version 2.0 --stage production
    #[command(verbatim_doc_comment)]
    #[cfg(feature = "client")]
    Publish(cmd::fleet::PublishArgs),
    /// Start, watch, pause, resume or abort staged rollouts on a fleet server.
    #[command(subcommand)]
    #[cfg(feature = "client")]
    Rollout(cmd::fleet::Rollout),
    /// Enroll and list devices on a fleet server.
    #[command(subcommand)]
    #[cfg(feature = "client")]
    Devices(cmd::fleet::Devices),
    /// Simulate a fleet: N devices in one process, each the real agent (own key, credentials,
    /// MQTT connection, A/B storage, runtime, telemetry) fed inputs from calibration data.
    ///
    /// Example: edgefleet simulate --devices 1000 --server http://127.0.0.1:8080 --root edgefleet-data/root.signed
    #[command(verbatim_doc_comment)]
    #[cfg(feature = "simulate")]
    Simulate(Box<cmd::simulate::Args>),
    /// The whole story on this machine: a fleet server on embedded defaults, simulated devices
    /// (boards, phones, microcontrollers), two real models, a healthy staged rollout to 100 %
    /// and a drifting candidate rolled back by itself. Prints the dashboard URL.
    ///
    /// Example: edgefleet demo --serve
    #[command(verbatim_doc_comment)]
    #[cfg(all(feature = "simulate", feature = "server", feature = "compiler"))]
    Demo(cmd::demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "compiler")]
        Command::Compile(a) => cmd::compile::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Keys(k) => cmd::keys::run(k),
        Command::Sign(a) => cmd::sign::sign(a),
        Command::Verify(a) => cmd::sign::verify(a),
        #[cfg(feature = "agent")]
        Command::Agent(a) => cmd::agent::run(a),
        #[cfg(feature = "server")]
        Command::Server(a) => cmd::server::run(*a),
        #[cfg(feature = "client")]
        Command::Publish(a) => cmd::fleet::publish(a),
        #[cfg(feature = "client")]
        Command::Rollout(r) => cmd::fleet::rollout(r),
        #[cfg(feature = "client")]
        Command::Devices(d) => cmd::fleet::devices(d),
        #[cfg(feature = "simulate")]
        Command::Simulate(a) => cmd::simulate::run(*a),
        #[cfg(all(feature = "simulate", feature = "server", feature = "compiler"))]
        Command::Demo(a) => cmd::demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Default output path: the input with another extension.
#[cfg(feature = "compiler")]
pub(crate) fn with_extension(p: &std::path::Path, ext: &str) -> std::path::PathBuf {
    p.with_extension(ext)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
