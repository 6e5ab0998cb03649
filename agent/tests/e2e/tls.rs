//! MQTT over TLS (the `tls` feature: rustls with ring): the agent verifies
//! mosquitto's certificate against the configured CA and installs an update
//! over the encrypted connection. Run with
//! `cargo test -p edgefleet-agent --features tls --test e2e tls`
//! (scripts/test-all does); certificates come from the openssl command.

use std::path::Path;
use std::process::{Command, Stdio};

use edgefleet_protocol::Event;

use crate::support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl").args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(ok.is_ok_and(|s| s.success()), "openssl {args:?} failed (is the openssl package installed?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_over_tls_to_mosquitto() {
    let dir = tempdir("tls");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgefleet-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // mosquitto started as root reads its files as the `mosquitto` user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["server.key", "server.pem", "ca.pem"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // A plain listener for the update server, a TLS one for the device.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let tls = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let conf = format!(
        "allow_anonymous true\npersistence false\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
        dir.display()
    );
    let _broker = mosquitto_with(plain, &conf);

    let keys = keys();
    let (v1, _) = kws_packages();
    let server = Server::start(plain).await;
    server.add(v1);
    let dev = "board-tls";
    let mqtt = format!("host = \"localhost\"\ntls = true\nca_file = \"{}\"", dir.join("ca.pem").display());
    let agent = AgentProc::spawn_full(&dir.join("agent"), dev, tls, &keys.root_signed, 60_000, "", &mqtt);
    server.publish_manifest(dev, sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;
    assert_eq!(infer(&agent.api(), &kws_real_input())["label"], "on");

    // A device that does not trust the broker's CA never connects.
    let wrong_ca = dir.join("wrong");
    std::fs::create_dir_all(&wrong_ca).expect("dir");
    openssl(
        &wrong_ca,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other",
            "-keyout",
            "k",
            "-out",
            "ca.pem",
        ],
    );
    let mqtt = format!("host = \"localhost\"\ntls = true\nca_file = \"{}\"", wrong_ca.join("ca.pem").display());
    let untrusting =
        AgentProc::spawn_full(&dir.join("agent2"), "board-tls-2", tls, &keys.root_signed, 60_000, "", &mqtt);
    untrusting.api();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!untrusting.log().contains("connected to the broker"), "connected despite an untrusted certificate");
}
