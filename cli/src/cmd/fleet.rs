//! Commands that talk to a fleet server's REST API: `publish`, `rollout
//! start|status|pause|resume|abort`, `devices list|enroll`.
//!
//! The server comes from `--server` or `EDGEFLEET_SERVER` (default
//! `http://127.0.0.1:8080`), the token from `--token`, `EDGEFLEET_TOKEN`, or
//! the `admin.token` file a local `edgefleet server` wrote in its data
//! directory (`--data-dir`, default `edgefleet-data`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Fleet server URL.
    #[arg(long, env = "EDGEFLEET_SERVER", default_value = "http://127.0.0.1:8080", value_name = "URL", global = true)]
    pub server: String,
    /// API token [default: the admin.token a local server wrote in --data-dir].
    #[arg(long, env = "EDGEFLEET_TOKEN", value_name = "TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Data directory of a local server, to find its admin.token.
    #[arg(long, env = "EDGEFLEET_DATA_DIR", default_value = "edgefleet-data", value_name = "DIR", global = true)]
    pub data_dir: PathBuf,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The API token: `--token`, `EDGEFLEET_TOKEN`, or a local server's `admin.token`.
///
/// # Errors
/// None of them.
pub fn token(conn: &Conn) -> Result<String> {
    match &conn.token {
        Some(t) => Ok(t.clone()),
        None => {
            let p = conn.data_dir.join("admin.token");
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("no API token: pass --token or EDGEFLEET_TOKEN (and none in {})", p.display()))
        }
    }
}

/// A small blocking client for the REST API.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `conn`.
    ///
    /// # Errors
    /// No token given and none found.
    pub fn new(conn: &Conn) -> Result<Client> {
        let token = token(conn)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(300)))
            .build()
            .into();
        Ok(Client { base: conn.server.trim_end_matches('/').to_string(), token, agent })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn finish(&self, what: &str, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value> {
        let mut r = r.map_err(|e| anyhow!("{what}: cannot reach {}: {e}", self.base))?;
        let status = r.status();
        let text = r.body_mut().read_to_string().with_context(|| format!("{what}: reading the response"))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let msg = body.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| body.to_string());
        bail!("{what}: {} {}: {msg}", status.as_u16(), status.canonical_reason().unwrap_or(""))
    }

    /// GET `path` (under `/api/v1`).
    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self.agent.get(self.url(path)).header("authorization", format!("Bearer {}", self.token)).call();
        self.finish(&format!("GET {path}"), r)
    }

    /// POST JSON to `path`.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r =
            self.agent.post(self.url(path)).header("authorization", format!("Bearer {}", self.token)).send_json(body);
        self.finish(&format!("POST {path}"), r)
    }

    /// PUT JSON to `path`.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        let r =
            self.agent.put(self.url(path)).header("authorization", format!("Bearer {}", self.token)).send_json(body);
        self.finish(&format!("PUT {path}"), r)
    }

    /// POST raw bytes to `path`, with extra headers.
    pub fn post_bytes(&self, path: &str, bytes: &[u8], headers: &[(&str, String)]) -> Result<Value> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/octet-stream");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        self.finish(&format!("POST {path}"), req.send(bytes))
    }
}

fn print_json(v: &Value) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Arguments of `edgefleet publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The package (.efm).
    pub package: PathBuf,
    /// Model id in the registry (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub model: String,
    /// Version name (e.g. 2.0).
    #[arg(long)]
    pub version: String,
    /// Initial stage: staging, production or archived.
    #[arg(long, default_value = "staging")]
    pub stage: String,
    /// Hardware ids to sign a manifest for right away with the server's key (comma-separated).
    #[arg(long, value_name = "IDS")]
    pub hardware: Option<String>,
    /// A manifest signed offline (`edgefleet sign`): the server checks it against its root and
    /// keeps it, so the release key never has to live on the server.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

/// `edgefleet publish`.
pub fn publish(a: PublishArgs) -> Result<()> {
    let client = Client::new(&a.conn)?;
    let bytes = std::fs::read(&a.package).with_context(|| format!("reading {}", a.package.display()))?;
    let mut headers = Vec::new();
    if let Some(m) = &a.manifest {
        let signed = std::fs::read(m).with_context(|| format!("reading {}", m.display()))?;
        headers.push(("x-edgefleet-manifest", hex::encode(signed)));
    }
    let mut path = format!("/models/{}/versions?version={}&stage={}", a.model, enc(&a.version), enc(&a.stage));
    if let Some(h) = &a.hardware {
        path.push_str(&format!("&hardware={}", enc(h)));
    }
    let v = client.post_bytes(&path, &bytes, &headers)?;
    if a.conn.json {
        return print_json(&v);
    }
    outln!(
        "published {} {} ({} bytes, sha256 {}, stage {}){}",
        a.model,
        a.version,
        v["package_bytes"],
        v["package_sha256"].as_str().unwrap_or("?"),
        v["stage"].as_str().unwrap_or("?"),
        if v["manifest"].is_string() { ", with a signed manifest" } else { "" }
    );
    Ok(())
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `edgefleet rollout ...`.
#[derive(clap::Subcommand, Debug)]
pub enum Rollout {
    /// Start a staged rollout of a model version to a group or a hardware class.
    ///
    /// Waves are cumulative percentages of the target; each wave's members are frozen when it
    /// starts, and it passes only if its gates pass against the control cohort still on the
    /// previous version (install success, p95 latency ratio, drift, shadow agreement, errors).
    ///
    /// Example:
    ///
    ///   edgefleet rollout start --model kws --version 2.0 --group field --waves 5,25,100 --gate soak_s=120
    #[command(verbatim_doc_comment)]
    Start(StartArgs),
    /// Show one rollout (gates, members, decisions), or list them.
    Status(StatusArgs),
    /// Pause a running rollout (no new wave starts).
    Pause(IdArg),
    /// Resume a paused rollout.
    Resume(IdArg),
    /// Abort a rollout: its members are sent the previous version.
    Abort(IdArg),
}

/// Arguments of `rollout start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Model id.
    #[arg(long)]
    pub model: String,
    /// Version to roll out.
    #[arg(long)]
    pub version: String,
    /// Target a static device group.
    #[arg(long, conflicts_with = "hardware", required_unless_present = "hardware")]
    pub group: Option<String>,
    /// Target every device of a hardware id.
    #[arg(long)]
    pub hardware: Option<String>,
    /// Cumulative wave sizes in percent, ending at 100.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
    pub waves: Vec<f64>,
    /// What a failed gate does: rollback or pause.
    #[arg(long, default_value = "rollback", value_parser = ["rollback", "pause"])]
    pub on_failure: String,
    /// Run the candidate in shadow mode beside the live model (agreement gate instead of a swap).
    #[arg(long)]
    pub shadow: bool,
    /// Override a gate, e.g. soak_s=120, max_p95_latency_ratio=1.3, min_inferences=500
    /// (see the server's /openapi.json, schema Gates).
    #[arg(long = "gate", value_name = "NAME=VALUE")]
    pub gates: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// A rollout id.
#[derive(clap::Args, Debug)]
pub struct IdArg {
    /// Rollout id.
    pub id: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `rollout status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Rollout id (none: list the latest rollouts).
    pub id: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Parses `--gate name=value` overrides into a JSON object.
fn gates(overrides: &[String]) -> Result<Value> {
    let mut m = serde_json::Map::new();
    for g in overrides {
        let (k, v) = g.split_once('=').ok_or_else(|| anyhow!("--gate {g:?}: expected NAME=VALUE"))?;
        let val = if v == "none" {
            Value::Null
        } else {
            let x: f64 = v.parse().map_err(|_| anyhow!("--gate {g:?}: {v:?} is not a number (or none)"))?;
            if x.fract() == 0.0 && x >= 0.0 && !k.starts_with("max_") && !k.starts_with("min_install") {
                json!(x as u64)
            } else {
                json!(x)
            }
        };
        m.insert(k.to_string(), val);
    }
    Ok(Value::Object(m))
}

/// `edgefleet rollout ...`.
pub fn rollout(r: Rollout) -> Result<()> {
    match r {
        Rollout::Start(a) => {
            let client = Client::new(&a.conn)?;
            let target = match (&a.group, &a.hardware) {
                (Some(g), _) => json!({ "group": g }),
                (None, Some(h)) => json!({ "hardware": h }),
                (None, None) => bail!("give --group or --hardware"),
            };
            let spec = json!({
                "model": a.model,
                "version": a.version,
                "target": target,
                "waves": a.waves,
                "gates": gates(&a.gates)?,
                "on_failure": a.on_failure,
                "mode": if a.shadow { "shadow" } else { "live" },
            });
            let v = client.post("/rollouts", &spec)?;
            if a.conn.json {
                return print_json(&v);
            }
            outln!("rollout {} started", v["id"].as_str().unwrap_or("?"));
            show(&v)
        }
        Rollout::Status(a) => {
            let client = Client::new(&a.conn)?;
            match a.id {
                Some(id) => {
                    let v = client.get(&format!("/rollouts/{id}"))?;
                    if a.conn.json { print_json(&v) } else { show(&v) }
                }
                None => {
                    let v = client.get("/rollouts?limit=20")?;
                    if a.conn.json {
                        return print_json(&v);
                    }
                    let mut t = comfy_table::Table::new();
                    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
                    t.set_header(["id", "model", "version", "target", "state", "wave", "installed", "phase"]);
                    for r in v["items"].as_array().into_iter().flatten() {
                        t.add_row([
                            s(&r["id"]),
                            s(&r["model"]),
                            s(&r["version"]),
                            format!("{} {}", s(&r["target_kind"]), s(&r["target"])),
                            s(&r["state"]),
                            format!("{}/{}", r["wave"], r["waves"].as_array().map_or(0, Vec::len)),
                            r["members"]["installed"].to_string(),
                            s(&r["status"]["phase"]),
                        ]);
                    }
                    outln!("{t}");
                    Ok(())
                }
            }
        }
        Rollout::Pause(a) => act(a, "pause"),
        Rollout::Resume(a) => act(a, "resume"),
        Rollout::Abort(a) => act(a, "abort"),
    }
}

fn act(a: IdArg, verb: &str) -> Result<()> {
    let client = Client::new(&a.conn)?;
    let v = client.post(&format!("/rollouts/{}/{verb}", a.id), &json!({}))?;
    if a.conn.json { print_json(&v) } else { show(&v) }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| if x.fract() == 0.0 { format!("{x}") } else { format!("{x:.3}") })
}

/// Prints one rollout for people.
fn show(v: &Value) -> Result<()> {
    outln!(
        "{} {} {} -> {} {} [{}], on failure: {}, mode {}",
        s(&v["id"]),
        s(&v["model"]),
        s(&v["version"]),
        s(&v["target_kind"]),
        s(&v["target"]),
        s(&v["state"]),
        s(&v["on_failure"]),
        s(&v["mode"])
    );
    let waves: Vec<String> = v["waves"].as_array().into_iter().flatten().map(num).collect();
    outln!(
        "wave {} of {} ({}%), previous version {}",
        v["wave"],
        waves.len(),
        waves.join("% → "),
        s(&v["previous_version"])
    );
    let m = &v["members"];
    outln!(
        "members: {} installed, {} pending, {} failed, {} timed out, {} reverting, {} reverted",
        m["installed"],
        m["pending"],
        m["failed"],
        m["timeout"],
        m["reverting"],
        m["reverted"]
    );
    let st = &v["status"];
    outln!("phase {}: {}", s(&st["phase"]), s(&st["message"]));
    if let Some(checks) = st["checks"].as_array().filter(|c| !c.is_empty()) {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(["gate", "value", "limit", "outcome", "note"]);
        for c in checks {
            t.add_row([s(&c["gate"]), num(&c["value"]), num(&c["limit"]), s(&c["outcome"]), s(&c["note"])]);
        }
        outln!("{t}");
    }
    if let Some(d) = v["decisions"].as_array() {
        outln!("decisions:");
        for d in d {
            outln!("  {} {:<13} {}", time(d["time_ms"].as_i64().unwrap_or(0)), s(&d["kind"]), s(&d["reason"]));
        }
    }
    Ok(())
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `edgefleet devices ...`.
#[derive(clap::Subcommand, Debug)]
pub enum Devices {
    /// List enrolled devices.
    List(ListArgs),
    /// Enroll a device: prints its MQTT credentials and downlink key (shown once).
    ///
    /// The public key comes from the device: `edgefleet-agent --print-device-key`.
    Enroll(EnrollArgs),
    /// Replace a device's static groups.
    Groups(GroupsArgs),
}

/// Arguments of `devices groups`.
#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    /// Device id.
    pub id: String,
    /// The new groups (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `devices list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only this platform.
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `devices enroll`.
#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    /// Device id (also its MQTT client id and user name).
    pub id: String,
    /// android, ios, linux-arm, linux or mcu.
    #[arg(long)]
    pub platform: String,
    /// Hardware id manifests are signed for.
    #[arg(long)]
    pub hardware: String,
    /// The device's public key, 64 hex digits.
    #[arg(long)]
    pub public_key: String,
    /// Static groups (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// `edgefleet devices ...`.
pub fn devices(d: Devices) -> Result<()> {
    match d {
        Devices::Groups(a) => {
            let client = Client::new(&a.conn)?;
            let groups: Vec<&String> = a.groups.iter().filter(|g| !g.is_empty()).collect();
            let v = client.put(&format!("/devices/{}/groups", a.id), &json!({ "groups": groups }))?;
            if a.conn.json {
                return print_json(&v);
            }
            outln!("{}: groups {}", s(&v["id"]), v["groups"]);
            Ok(())
        }
        Devices::Enroll(a) => {
            let client = Client::new(&a.conn)?;
            let v = client.post(
                "/devices",
                &json!({"id": a.id, "platform": a.platform, "hardware_id": a.hardware, "public_key": a.public_key, "groups": a.groups}),
            )?;
            if a.conn.json {
                return print_json(&v);
            }
            outln!("EDGEFLEET_DEVICE_ID={}", s(&v["id"]));
            outln!("EDGEFLEET_MQTT_HOST={}", s(&v["mqtt"]).rsplit_once(':').map_or(String::new(), |h| h.0.to_string()));
            outln!("EDGEFLEET_MQTT_PORT={}", s(&v["mqtt"]).rsplit_once(':').map_or(String::new(), |h| h.1.to_string()));
            outln!("EDGEFLEET_MQTT_USERNAME={}", s(&v["mqtt_username"]));
            outln!("EDGEFLEET_MQTT_PASSWORD={}", s(&v["mqtt_password"]));
            outln!("EDGEFLEET_DOWNLINK_KEY={}", s(&v["downlink_key"]));
            Ok(())
        }
        Devices::List(a) => {
            let client = Client::new(&a.conn)?;
            let mut t = comfy_table::Table::new();
            t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(["id", "platform", "hardware", "model", "version", "groups", "last seen"]);
            let mut cursor: Option<String> = None;
            let mut all = Vec::new();
            loop {
                let mut path = "/devices?limit=1000".to_string();
                if let Some(g) = &a.group {
                    path.push_str(&format!("&group={}", enc(g)));
                }
                if let Some(p) = &a.platform {
                    path.push_str(&format!("&platform={}", enc(p)));
                }
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", enc(c)));
                }
                let v = client.get(&path)?;
                all.extend(v["items"].as_array().cloned().unwrap_or_default());
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            if a.conn.json {
                return print_json(&Value::Array(all));
            }
            for d in &all {
                let groups: Vec<String> = d["groups"].as_array().into_iter().flatten().map(s).collect();
                let seen = d["last_seen_ms"].as_i64().unwrap_or(0);
                t.add_row([
                    s(&d["id"]),
                    s(&d["platform"]),
                    s(&d["hardware_id"]),
                    s(&d["live_model"]),
                    s(&d["live_version"]),
                    groups.join(","),
                    if seen == 0 { "never".into() } else { time(seen) },
                ]);
            }
            outln!("{t}");
            outln!("{} devices", all.len());
            Ok(())
        }
    }
}
