//! Benchmarks of the edgefleet runtime on the four MLPerf Tiny reference
//! models, and the pieces of `compare`, the harness that runs the same models
//! side by side with other inference engines and prints one table.
//!
//! - [`models`]: the four models, where their files are, their inputs;
//! - [`engine`]: the engines (columns), their precision, files and inputs;
//! - [`ours`]: our runtime (compile in-process, load, run); [`ours::ours_session`]
//!   is the one place that sets up an inference, shared by the criterion
//!   benches and `compare`;
//! - [`tract_peer`]: tract (fp32, and the int8 QDQ models where it runs them);
//! - `burn_peer` (feature `burn`): burn on the fp32 graphs burn-onnx imports;
//! - [`worker`]: the persistent Python worker process that runs onnxruntime,
//!   LiteRT and TFLite Micro;
//! - [`stats`]: medians, best-of-trials, the interleaved schedule, the table
//!   and ratios;
//! - [`report`]: the printed table and the JSON document;
//! - [`machine`]: CPU model and core count.

#[cfg(feature = "burn")]
pub mod burn_peer;
pub mod engine;
pub mod machine;
pub mod models;
pub mod ours;
pub mod report;
pub mod stats;
pub mod tract_peer;
pub mod worker;

/// tract's version, as pinned in the workspace `Cargo.toml` (a test checks
/// the two agree).
pub const TRACT_VERSION: &str = "0.23.9";

#[cfg(test)]
mod tests {
    #[test]
    fn tract_version_matches_the_workspace_pin() {
        let toml = include_str!("../../Cargo.toml");
        let pin = format!("tract-onnx = {{ version = \"={}\"", super::TRACT_VERSION);
        assert!(toml.contains(&pin), "update TRACT_VERSION: the workspace no longer has `{pin}`");
    }
}
