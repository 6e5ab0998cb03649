//! What machine a run happened on: CPU model, logical cores, OS.

use serde_json::{Value, json};

/// The machine, for the report.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo` ("unknown" elsewhere).
    pub cpu: String,
    /// Logical cores the OS reports.
    pub cores: usize,
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// `std::env::consts::OS`.
    pub os: &'static str,
}

impl Machine {
    /// Probes the current machine.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            arch: std::env::consts::ARCH,
            os: std::env::consts::OS,
        }
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        format!("{} ({} {}), {} logical cores", self.cpu, self.os, self.arch, self.cores)
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({ "cpu": self.cpu, "cores": self.cores, "arch": self.arch, "os": self.os })
    }
}

/// The first `model name` (x86) or `Model`/`Hardware` (ARM) line of a
/// `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_model_from_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n";
        assert_eq!(super::cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(super::cpu_model("flags: x\n"), None);
    }
}
