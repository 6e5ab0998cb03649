//! Device identity does not rest on the broker: the embedded broker admits
//! a device only under its own id with its own password and keeps it on its
//! own topics, but an external broker may have no ACLs at all (the
//! Mosquitto run here allows anyone anything). So everything a device says
//! is signed by its key and checked against the key enrolled for the
//! topic's device, and everything the server says to one device is sealed
//! with that device's key. A second, enrolled device ("mallory") tries.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgefleet_protocol::{
    ChunkRequest, Event, Kind, Manifest, Payload, SecretKey, Signed, Uplink, parse_hex32, seal, sha256, topics,
};
use rumqttc::{Client, Connection, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::support::*;

/// A raw MQTT session: its client and what arrives (publishes, or the
/// connection error that ended it).
struct Session {
    client: Client,
    rx: mpsc::Receiver<Result<(String, Vec<u8>), String>>,
}

fn connect(port: u16, client_id: &str, user: &str, password: &str) -> Session {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, conn) = Client::new(o, 64);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || pump(conn, tx));
    Session { client, rx }
}

fn pump(mut conn: Connection, tx: mpsc::Sender<Result<(String, Vec<u8>), String>>) {
    for ev in conn.iter() {
        let msg = match ev {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => Ok((String::from("$connack"), vec![])),
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => Ok((p.topic.clone(), p.payload.to_vec())),
            Ok(_) => continue,
            Err(e) => Err(e.to_string()),
        };
        let stop = msg.is_err();
        if tx.send(msg).is_err() || stop {
            return;
        }
    }
}

impl Session {
    /// Waits for the broker's answer to CONNECT: `Ok` if admitted.
    fn admitted(&self) -> Result<(), String> {
        match self.rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok((t, _))) if t == "$connack" => Ok(()),
            Ok(Ok((t, _))) => Err(format!("unexpected publish on {t} before CONNACK")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no answer".into()),
        }
    }

    /// The next publish on `topic`, within `secs`.
    fn next_on(&self, topic: &str, secs: u64) -> Option<Vec<u8>> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok((tp, p))) if tp == topic => return Some(p),
                Ok(Err(e)) => panic!("session ended: {e}"),
                _ => {}
            }
        }
        None
    }
}

fn key(hex: &str) -> [u8; 32] {
    parse_hex32(hex).expect("64 hex digits")
}

#[test]
fn devices_cannot_impersonate_or_read_each_other_on_the_embedded_broker() {
    scenario(None);
}

#[test]
fn devices_cannot_impersonate_or_read_each_other_on_a_broker_without_acls() {
    scenario(Some(Mosquitto::start()));
}

/// Whether the session ends (the embedded broker cut it) within 10 s.
fn cut_off(s: &Session) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        match s.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            _ => {}
        }
    }
    false
}

fn scenario(mosquitto: Option<Mosquitto>) {
    let keys = keys();
    let pkgs = kws_packages();
    let url = mosquitto.as_ref().map(|m| format!("mqtt://127.0.0.1:{}", m.port));
    let extra: Vec<&str> = url.as_deref().map(|u| vec!["--mqtt-url", u]).unwrap_or_default();
    let acls = mosquitto.is_none();
    let server = ServerProc::start(if acls { "identity" } else { "identity-noacl" }, &keys, &extra);
    server.publish("kws", "1.0", &pkgs.v1);
    let mut b = AgentProc::enroll_and_start(&server, &keys, "dev-b", "linux-arm", "rpi4", &["lab"]);
    let _ = b.api();
    // Mallory: an enrolled device with its own key and credentials, but no agent.
    let mallory_key = SecretKey::from_bytes(&[77; 32]);
    let m = server.ok(
        "POST",
        "/api/v1/devices",
        Some(&json!({"id": "mallory", "platform": "linux-arm", "hardware_id": "rpi4",
            "public_key": edgefleet_protocol::hex32(&mallory_key.public().0)})),
    );
    let (m_pass, m_downlink) =
        (m["mqtt_password"].as_str().expect("pw"), key(m["downlink_key"].as_str().expect("key")));
    let b_downlink = key(&b.creds.downlink_key);

    // Give dev-b a manifest to hold (a rollout to its group).
    let r = server.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "1.0", "target": {"group": "lab"}, "waves": [100],
            "gates": {"soak_s": 0, "min_inferences": 0}})),
    );
    let id = r["id"].as_str().expect("id").to_string();
    server.wait_rollout(&id, 120, "completed", |r| r["state"] == "completed");
    assert_eq!(b.live_version().as_deref(), Some("1.0"));
    let port = server.mqtt_port;

    if acls {
        // The broker admits a device only as itself.
        connect(port, "mallory", "mallory", "not-the-password").admitted().expect_err("wrong password admitted");
        connect(port, "dev-b", "mallory", m_pass).admitted().expect_err("mallory's password let it connect as dev-b");
        connect(port, "dev-b", "dev-b", m_pass).admitted().expect_err("mallory's password works for dev-b");
        connect(port, "edgefleet-server-x", "edgefleet-server-x", m_pass)
            .admitted()
            .expect_err("device posing as the server");
        connect(port, "ghost", "ghost", m_pass).admitted().expect_err("an unenrolled device admitted");

        // And on its own topics: reading dev-b's manifest, publishing on
        // dev-b's uplink or listening to every device's: cut off.
        let denied = || metric(&server.metrics(), "edgefleet_broker_denied_total", &[]);
        let mal = connect(port, "mallory", "mallory", m_pass);
        mal.admitted().expect("mallory with its own credentials");
        mal.client.subscribe(topics::device_manifest("dev-b"), QoS::AtLeastOnce).expect("subscribe");
        assert!(cut_off(&mal), "mallory subscribed to dev-b's manifest");
        let mal = connect(port, "mallory", "mallory", m_pass);
        mal.admitted().expect("mallory again");
        mal.client.publish(topics::uplink("dev-b"), QoS::AtLeastOnce, false, vec![1, 2, 3]).expect("publish");
        assert!(cut_off(&mal), "mallory published on dev-b's uplink topic");
        let mal = connect(port, "mallory", "mallory", m_pass);
        mal.admitted().expect("mallory again");
        mal.client.subscribe(topics::ALL_UPLINKS, QoS::AtLeastOnce).expect("subscribe");
        assert!(cut_off(&mal), "mallory subscribed to every uplink");
        assert_eq!(denied(), 3.0);
    }
    let mal = connect(port, "mallory", "mallory", m_pass);
    mal.admitted().expect("mallory with its own credentials");

    // What mallory can still do on its own topics: name dev-b inside its own uplink, or send garbage.
    let before = server.metrics();
    let forged = |device: &str, signer: &SecretKey, seq: u64| {
        let up = Uplink {
            device_id: device.into(),
            seq,
            time_ms: unix_now() * 1000,
            payload: Payload::Event(Event::DriftDetected { psi: 9.0, threshold: 0.25 }),
        };
        Signed::sign(Kind::Uplink, &up, &[signer]).expect("sign").to_bytes().expect("bytes")
    };
    let events_before = server.ok("GET", "/api/v1/events?limit=1000", None);
    // Signed by mallory, on its own topic, naming dev-b: topic mismatch.
    mal.client
        .publish(topics::uplink("mallory"), QoS::AtLeastOnce, false, forged("dev-b", &mallory_key, 1 << 40))
        .expect("pub");
    // Garbage.
    mal.client.publish(topics::uplink("mallory"), QoS::AtLeastOnce, false, vec![1, 2, 3]).expect("pub");
    expect_rejections(&server, &before, &[("topic_mismatch", 1.0), ("malformed", 1.0)]);
    if acls {
        assert_eq!(drift_events(&server.ok("GET", "/api/v1/events?limit=1000", None)), drift_events(&events_before));
        return;
    }

    // Reading dev-b's updates: mallory can subscribe (no ACL), but what it gets is sealed for dev-b.
    let manifest_topic = topics::device_manifest("dev-b");
    mal.client.subscribe(&manifest_topic, QoS::AtLeastOnce).expect("subscribe");
    let sealed = mal.next_on(&manifest_topic, 10).expect("the retained manifest of dev-b");
    assert!(seal::open(&m_downlink, &manifest_topic, &sealed).is_err(), "mallory opened dev-b's manifest");
    assert!(Signed::from_bytes(&sealed).is_err(), "a manifest readable without the key");
    let plain = seal::open(&b_downlink, &manifest_topic, &sealed).expect("dev-b's key opens it");
    let manifest: Manifest = Signed::from_bytes(&plain).expect("signed").decode(Kind::Manifest).expect("manifest");
    assert_eq!(manifest.package_sha256, sha256(&pkgs.v1));
    // Replayed onto mallory's own topic, the sealed bytes do not open for mallory either (topic bound).
    assert!(seal::open(&m_downlink, &topics::device_manifest("mallory"), &sealed).is_err());

    // Package chunks asked for in dev-b's name go to dev-b's topic, sealed for dev-b.
    let resp_topic = topics::chunk_response("dev-b");
    mal.client.subscribe(&resp_topic, QoS::AtMostOnce).expect("subscribe");
    std::thread::sleep(Duration::from_millis(300));
    let req = ChunkRequest { package_sha256: sha256(&pkgs.v1), index: 0, chunk_size: 4096 };
    let req = postcard::to_allocvec(&req).expect("encode");
    mal.client.publish(topics::chunk_request("dev-b"), QoS::AtLeastOnce, false, req).expect("publish");
    let chunk = mal.next_on(&resp_topic, 10).expect("a chunk response");
    assert!(seal::open(&m_downlink, &resp_topic, &chunk).is_err(), "mallory read a chunk sealed for dev-b");
    assert!(!chunk.windows(64).any(|w| w == &pkgs.v1[..64]), "package bytes in the clear");
    assert!(seal::open(&b_downlink, &resp_topic, &chunk).is_ok());

    // Publishing as dev-b (the broker lets it).
    let before = server.metrics();
    // In dev-b's name on dev-b's topic, signed by mallory: bad signature.
    mal.client
        .publish(topics::uplink("dev-b"), QoS::AtLeastOnce, false, forged("dev-b", &mallory_key, 1 << 40))
        .expect("pub");
    // Mallory's own uplink dropped on dev-b's topic: checked against dev-b's key, bad signature.
    mal.client
        .publish(topics::uplink("dev-b"), QoS::AtLeastOnce, false, forged("mallory", &mallory_key, 1 << 40))
        .expect("pub");
    // Garbage on dev-b's topic.
    mal.client.publish(topics::uplink("dev-b"), QoS::AtLeastOnce, false, vec![1, 2, 3]).expect("pub");
    expect_rejections(&server, &before, &[("bad_signature", 2.0), ("malformed", 1.0)]);

    // A genuine uplink of dev-b, captured and replayed by mallory, changes nothing.
    let up_topic = topics::uplink("dev-b");
    mal.client.subscribe(&up_topic, QoS::AtLeastOnce).expect("subscribe");
    let genuine = mal.next_on(&up_topic, 15).expect("dev-b reports within its telemetry interval");
    let dup_before = metric(&server.metrics(), "edgefleet_uplinks_duplicate_total", &[]);
    let stored_before = metric(&server.metrics(), "edgefleet_uplinks_total", &[]);
    mal.client.unsubscribe(&up_topic).expect("unsubscribe");
    b.kill9(); // so only the replay can add uplinks now
    std::thread::sleep(Duration::from_millis(500));
    let stored_before = stored_before.max(metric(&server.metrics(), "edgefleet_uplinks_total", &[]));
    mal.client.publish(&up_topic, QoS::AtLeastOnce, false, genuine).expect("replay");
    let t = Instant::now();
    while metric(&server.metrics(), "edgefleet_uplinks_duplicate_total", &[]) <= dup_before {
        assert!(t.elapsed() < Duration::from_secs(10), "replay not recognised as a duplicate");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&server.metrics(), "edgefleet_uplinks_total", &[]), stored_before, "a replay was stored");

    // Nothing of it reached dev-b's record.
    let events_after = server.ok("GET", "/api/v1/events?limit=1000", None);
    assert_eq!(drift_events(&events_after), drift_events(&events_before), "{events_after}");
    let dev = server.ok("GET", "/api/v1/devices/mallory", None);
    assert!(dev["live_version"].is_null(), "{dev}");
}

/// dev-b's drift events carrying mallory's forged PSI.
fn drift_events(v: &serde_json::Value) -> usize {
    v.as_array().map_or(0, |a| {
        a.iter().filter(|e| e["device"] == "dev-b" && e["detail"].to_string().contains("psi\":9")).count()
    })
}

/// Waits until the server has refused exactly `want` more uplinks per reason than in `before` (a metrics text).
fn expect_rejections(server: &ServerProc, before: &str, want: &[(&str, f64)]) {
    let rejected =
        |m: &str, reason: &str| metric(m, "edgefleet_uplinks_rejected_total", &[&format!("reason=\"{reason}\"")]);
    let t = Instant::now();
    loop {
        let now = server.metrics();
        let got: Vec<f64> = want.iter().map(|(r, _)| rejected(&now, r) - rejected(before, r)).collect();
        if got.iter().zip(want).all(|(g, (_, w))| g >= w) {
            assert_eq!(got, want.iter().map(|w| w.1).collect::<Vec<_>>(), "rejections by reason {want:?}");
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "rejections not counted: {got:?}, expected {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
