//! The client side of the Python worker (`benches/compare/worker.py`): one
//! persistent process, JSON lines on its stdin and stdout, its stderr passed
//! through. It runs onnxruntime, LiteRT and TFLite Micro single-threaded and
//! times each invoke itself, so neither Python start-up nor IPC is measured.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// Environment given to the worker so no library starts a thread pool.
pub const SINGLE_THREAD_ENV: [(&str, &str); 7] = [
    ("OMP_NUM_THREADS", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("TF_NUM_INTRAOP_THREADS", "1"),
    ("TF_NUM_INTEROP_THREADS", "1"),
    ("TF_CPP_MIN_LOG_LEVEL", "1"),
    ("PYTHONUNBUFFERED", "1"),
];

/// What the worker reports about itself.
#[derive(Clone, Debug, Default)]
pub struct Hello {
    /// Python version.
    pub python: String,
    /// Python executable.
    pub executable: String,
    /// Package versions (`None`: not installed).
    pub versions: BTreeMap<String, Option<String>>,
    /// Per worker engine (`ort`, `litert`, `tflm`), why it cannot run.
    pub errors: BTreeMap<String, String>,
}

/// A loaded session in the worker.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Engine notes (threads, XNNPACK applied or not).
    pub info: String,
    /// Where the input came from.
    pub input: String,
}

/// The running worker.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    python: PathBuf,
}

impl Worker {
    /// Starts `python script` with single-thread settings.
    ///
    /// # Errors
    /// The interpreter or the script cannot be started.
    pub fn spawn(python: &Path, script: &Path) -> Result<Worker> {
        if !script.is_file() {
            bail!("the Python worker {} is missing", script.display());
        }
        let mut cmd = Command::new(python);
        cmd.arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in SINGLE_THREAD_ENV {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting the Python worker with {} (pass --python PATH, e.g. the venv that benches/compare/run makes)",
                python.display()
            )
        })?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        Ok(Worker { child, stdin, stdout, python: python.to_path_buf() })
    }

    fn request(&mut self, req: &Value) -> Result<Value> {
        let line = serde_json::to_string(req)?;
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| anyhow!("the Python worker ({}) is gone: {e}", self.python.display()))?;
        let mut reply = String::new();
        let n = self.stdout.read_line(&mut reply)?;
        if n == 0 {
            let status = self.child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_default();
            bail!("the Python worker ({}) exited {status} (its error is above)", self.python.display());
        }
        let v: Value = serde_json::from_str(reply.trim())
            .with_context(|| format!("the Python worker sent a line that is not JSON: {:?}", reply.trim()))?;
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            bail!("{}", v.get("error").and_then(Value::as_str).unwrap_or("the Python worker failed"));
        }
        Ok(v)
    }

    /// Asks for versions and which engines can be imported.
    ///
    /// # Errors
    /// The worker does not answer.
    pub fn hello(&mut self) -> Result<Hello> {
        let v = self.request(&json!({ "op": "hello" })).context("the Python worker did not start")?;
        let str_map = |key: &str| -> BTreeMap<String, Option<String>> {
            v.get(key)
                .and_then(Value::as_object)
                .map(|o| o.iter().map(|(k, x)| (k.clone(), x.as_str().map(String::from))).collect())
                .unwrap_or_default()
        };
        Ok(Hello {
            python: v.get("python").and_then(Value::as_str).unwrap_or("?").into(),
            executable: v.get("executable").and_then(Value::as_str).unwrap_or("?").into(),
            versions: str_map("versions"),
            errors: str_map("errors").into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect(),
        })
    }

    /// Loads `model` into engine `engine` as session `id`, with `warmup`
    /// untimed runs.
    ///
    /// # Errors
    /// The engine cannot load or run the model.
    pub fn load(
        &mut self,
        id: &str,
        engine: &str,
        model: &Path,
        input: Option<&Path>,
        warmup: usize,
    ) -> Result<Loaded> {
        let v = self.request(&json!({
            "op": "load", "id": id, "engine": engine, "model": model, "input": input, "warmup": warmup,
        }))?;
        Ok(Loaded {
            info: v.get("info").and_then(Value::as_str).unwrap_or_default().into(),
            input: v.get("input").and_then(Value::as_str).unwrap_or_default().into(),
        })
    }

    /// Runs session `id` `warmup` untimed then `runs` timed times; returns
    /// each timed invoke in milliseconds.
    ///
    /// # Errors
    /// The worker fails or answers with the wrong count.
    pub fn run(&mut self, id: &str, runs: usize, warmup: usize) -> Result<Vec<f64>> {
        let v = self.request(&json!({ "op": "run", "id": id, "runs": runs, "warmup": warmup }))?;
        let ns = v.get("ns").and_then(Value::as_array).context("the worker's reply has no times")?;
        let ms: Vec<f64> = ns.iter().filter_map(Value::as_f64).map(|x| x / 1e6).collect();
        if ms.len() != runs {
            bail!("the worker returned {} times for {runs} runs", ms.len());
        }
        Ok(ms)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "op": "quit" }));
        let _ = self.stdin.flush();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
