//! Uplinks from devices: verified (the device's enrolled key, the topic's
//! device id), stored once per `(device, seq)` (QoS-1 redeliveries and
//! spooled resends are acknowledged again but not counted twice), then
//! applied: inventory, live model, telemetry rows, events, and the rollout
//! memberships an install, rejection or rollback settles. An uplink is
//! acknowledged only after it is in the database, so a device forgets
//! nothing the server has not kept.

use edgefleet_protocol::{Event, Kind, ModelRef, Payload, PublicKey, Signed, Uplink, hex32, parse_hex32};
use tracing::{debug, warn};

use crate::metrics::labels;
use crate::server::App;
use crate::store::{EventRow, TelemetryRow, TelemetryUplink};
use crate::util::now_ms;

/// Counts a refused message.
pub fn reject(app: &App, reason: &str) {
    app.metrics.uplinks_rejected.get_or_create(&labels(&[("reason", reason)])).inc();
}

/// An uplink whose signature, device and topic were checked.
pub struct Verified {
    /// The device (the topic's, which signed it).
    pub dev: String,
    /// Its sequence number.
    pub seq: i64,
    /// What it says.
    pub up: Uplink,
}

impl Verified {
    /// A telemetry window (these are batched: see [`telemetry_batch`]).
    pub fn is_telemetry(&self) -> bool {
        matches!(self.up.payload, Payload::Telemetry(_))
    }
}

/// Checks one uplink from the topic of `dev`: `None` (counted as rejected)
/// if it is malformed, from an unknown device, badly signed or names
/// another device.
pub async fn verify(app: &App, dev: &str, payload: &[u8]) -> Option<Verified> {
    let Ok(signed) = Signed::from_bytes(payload) else {
        reject(app, "malformed");
        return None;
    };
    let keys = match app.ingest.device_keys(dev).await {
        Ok(Some(k)) => k,
        Ok(None) => {
            reject(app, "unknown_device");
            return None;
        }
        Err(e) => {
            warn!("uplink from {dev}: {e}");
            return None;
        }
    };
    let Some(pk) = parse_hex32(&keys.public_key).map(PublicKey) else {
        reject(app, "corrupt_key");
        return None;
    };
    if signed.kind != Kind::Uplink || signed.tally(&[pk], &[pk.id()], &[]).check(1).is_err() {
        reject(app, "bad_signature");
        return None;
    }
    let Ok(up) = signed.decode::<Uplink>(Kind::Uplink) else {
        reject(app, "malformed");
        return None;
    };
    if up.device_id != dev {
        // Signed by this device's key but naming another: refuse.
        reject(app, "topic_mismatch");
        return None;
    }
    let Ok(seq) = i64::try_from(up.seq) else {
        reject(app, "malformed");
        return None;
    };
    Some(Verified { dev: dev.to_string(), seq, up })
}

/// Stores and applies one verified uplink (`payload`: as received);
/// returns the sequence numbers to acknowledge, `None` if it could not be
/// stored.
pub async fn store(app: &App, v: &Verified, payload: &[u8]) -> Option<Vec<u64>> {
    if v.is_telemetry() {
        return telemetry_batch(app, &[(v, payload)]).await.pop().and_then(|(_, seqs)| seqs);
    }
    let (dev, seq, up) = (v.dev.as_str(), v.seq, &v.up);
    let kind = match &up.payload {
        Payload::Hello(_) => "hello",
        Payload::Telemetry(_) => "telemetry",
        Payload::Event(_) => "event",
    };
    let now = now_ms();
    match app.ingest.insert_uplink(dev, seq, up.time_ms as i64, kind, payload, now).await {
        Ok(true) => {}
        Ok(false) => {
            app.metrics.uplinks_duplicate.inc();
            return Some(vec![up.seq]);
        }
        Err(e) => {
            warn!("storing an uplink from {dev}: {e}");
            return None;
        }
    }
    if let Err(e) = apply(app, dev, seq, up).await {
        // Stored already: applying again on a redelivery would be skipped, so log loudly.
        warn!("applying uplink {dev}#{seq}: {e}");
    }
    app.metrics.uplinks.get_or_create(&labels(&[("kind", kind)])).inc();
    Some(vec![up.seq])
}

/// Stores a run of verified telemetry uplinks (with the payloads as
/// received) in one transaction, as [`store`] would one by one; returns
/// each device with the sequence numbers to acknowledge (`None`: not
/// stored, the device sends it again).
pub async fn telemetry_batch(app: &App, items: &[(&Verified, &[u8])]) -> Vec<(String, Option<Vec<u64>>)> {
    let mut rows = Vec::with_capacity(items.len());
    let mut out: Vec<(String, Option<Vec<u64>>)> = Vec::with_capacity(items.len());
    let mut stored = Vec::with_capacity(items.len());
    for &(v, payload) in items {
        let Payload::Telemetry(t) = &v.up.payload else {
            // Callers pass telemetry only ([`store`] takes the rest).
            warn!("uplink {}#{} is not telemetry", v.dev, v.seq);
            out.push((v.dev.clone(), None));
            continue;
        };
        let body = match postcard::to_allocvec(&**t) {
            Ok(b) => b,
            Err(e) => {
                warn!("uplink {}#{}: {e}", v.dev, v.seq);
                out.push((v.dev.clone(), None));
                continue;
            }
        };
        rows.push(TelemetryUplink {
            row: TelemetryRow {
                device_id: v.dev.clone(),
                seq: v.seq,
                window_end_ms: t.window_end_ms as i64,
                package_sha256: t.model.as_ref().map(sha).unwrap_or_default(),
                inferences: t.inferences as i64,
                errors: t.errors as i64,
                latency_p95_us: t.latency.p95_us as i64,
                drift_psi: t.drift.map(|d| d.psi as f64),
                shadow_agreement: t.shadow.as_ref().map(|s| s.agreement as f64),
                shadow_inferences: t.shadow.as_ref().map_or(0, |s| s.inferences as i64),
                body,
            },
            time_ms: v.up.time_ms as i64,
            signed: payload,
            live: t.model.as_ref().map(|m| (m.model_id.clone(), m.version.clone(), sha(m), m.release_counter as i64)),
        });
        stored.push(v);
    }
    if rows.is_empty() {
        return out;
    }
    match app.ingest.insert_telemetry_batch(&rows, now_ms()).await {
        Ok(new) => {
            for (v, is_new) in stored.into_iter().zip(new) {
                if !is_new {
                    app.metrics.uplinks_duplicate.inc();
                } else if let Payload::Telemetry(t) = &v.up.payload {
                    if let Some(m) = &t.model {
                        // Labels name registered versions only: a device cannot mint label sets.
                        let (model, version) = app
                            .registered(&sha(m))
                            .await
                            .unwrap_or_else(|| ("unregistered".into(), "unregistered".into()));
                        let l = labels(&[("model", &model), ("version", &version)]);
                        app.metrics.inferences.get_or_create(&l).inc_by(t.inferences);
                        app.metrics.inference_errors.get_or_create(&l).inc_by(t.errors);
                    }
                    app.metrics.uplinks.get_or_create(&labels(&[("kind", "telemetry")])).inc();
                }
                out.push((v.dev.clone(), Some(vec![v.up.seq])));
            }
        }
        Err(e) => {
            warn!("storing {} telemetry uplinks: {e}", rows.len());
            out.extend(stored.into_iter().map(|v| (v.dev.clone(), None)));
        }
    }
    out
}

fn sha(m: &ModelRef) -> String {
    hex32(&m.package_sha256)
}

async fn apply(app: &App, dev: &str, seq: i64, up: &Uplink) -> anyhow::Result<()> {
    let now = now_ms();
    match &up.payload {
        Payload::Hello(info) => {
            app.ingest
                .update_inventory(dev, &info.agent_version, &info.runtime_version, info.memory_bytes as i64, now)
                .await?;
            if let Some(m) = &info.live {
                app.ingest.set_live(dev, &m.model_id, &m.version, &sha(m), m.release_counter as i64).await?;
            }
            // (Re)send what this device should hold: brokers may have lost retained messages.
            crate::server::republish(app, dev).await;
        }
        // Stored and applied by `telemetry_batch`.
        Payload::Telemetry(_) => {}
        Payload::Event(e) => {
            let (kind, package) = match e {
                Event::Started { live, .. } => ("started", live.as_ref().map(sha)),
                Event::UpdateRejected { .. } => ("update_rejected", None),
                Event::DownloadStarted { model, .. } => ("download_started", Some(sha(model))),
                Event::Installed { model, .. } => ("installed", Some(sha(model))),
                Event::RolledBack { model, .. } => ("rolled_back", Some(sha(model))),
                Event::ShadowStarted { candidate } => ("shadow_started", Some(sha(candidate))),
                Event::DriftDetected { .. } => ("drift_detected", None),
                Event::RootUpdated { .. } => ("root_updated", None),
            };
            app.ingest
                .insert_event(&EventRow {
                    device_id: dev.to_string(),
                    seq,
                    time_ms: up.time_ms as i64,
                    kind: kind.to_string(),
                    package_sha256: package,
                    detail: serde_json::to_string(&event_json(e))?,
                })
                .await?;
            match e {
                Event::Started { live: Some(m), .. } | Event::Installed { model: m, .. } => {
                    app.ingest.set_live(dev, &m.model_id, &m.version, &sha(m), m.release_counter as i64).await?;
                }
                _ => {}
            }
            crate::rollout::on_event(app, dev, e).await?;
        }
    }
    debug!(dev, seq, "uplink applied");
    Ok(())
}

fn model_json(m: &ModelRef) -> serde_json::Value {
    serde_json::json!({
        "model": m.model_id, "version": m.version, "release_counter": m.release_counter,
        "package_sha256": hex32(&m.package_sha256), "rollout_id": m.rollout_id,
    })
}

/// An event as the API shows it (hashes in hex).
pub fn event_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    match e {
        Event::Started { live, recovered } => json!({"live": live.as_ref().map(model_json), "recovered": recovered}),
        Event::UpdateRejected { model_id, version, release_counter, rollout_id, reason } => json!({
            "model": model_id, "version": version, "release_counter": release_counter, "rollout_id": rollout_id, "reason": reason
        }),
        Event::DownloadStarted { model, mode } => {
            json!({"model": model_json(model), "mode": format!("{mode:?}").to_lowercase()})
        }
        Event::Installed { model, previous, selftest_us } => json!({
            "model": model_json(model), "previous": previous.as_ref().map(model_json), "selftest_us": selftest_us
        }),
        Event::RolledBack { model, reason } => json!({"model": model_json(model), "reason": reason}),
        Event::ShadowStarted { candidate } => json!({"candidate": model_json(candidate)}),
        Event::DriftDetected { psi, threshold } => json!({"psi": psi, "threshold": threshold}),
        Event::RootUpdated { version } => json!({"version": version}),
    }
}
