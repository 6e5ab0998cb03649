//! The update logic as a sans-I/O state machine: [`Machine::handle`] takes an
//! [`Input`] (a manifest arrived, a chunk arrived, a timer fired, the install
//! finished) and returns [`Action`]s (request a chunk, append bytes, install,
//! report an event). It never touches the network or the disk, so every path
//! — each attack, a resume after a restart, a health-check failure — is
//! unit-tested without either; the tokio side only moves bytes.

use edgefleet_protocol::{
    ChunkRequest, ChunkResponse, ChunkStatus, DeviceContext, Event, Kind, Manifest, Mode, ModelRef, PackageVerifier,
    Signed, TrustStore, VerifyError, chunks::chunk_count,
};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A signed manifest arrived (device or group topic).
    Manifest {
        /// Wire bytes.
        bytes: Vec<u8>,
        /// Unix seconds.
        now: u64,
    },
    /// A signed root arrived.
    Root {
        /// Wire bytes.
        bytes: Vec<u8>,
        /// Unix seconds.
        now: u64,
    },
    /// A chunk response arrived.
    Chunk(ChunkResponse),
    /// No chunk response within the deadline.
    Timeout,
    /// (Re)connected to the broker.
    Connected,
    /// At start-up: a download recorded on disk, and its bytes so far.
    Resume {
        /// Signed manifest bytes.
        manifest: Vec<u8>,
        /// Chunk size it used.
        chunk_size: u32,
        /// Bytes already stored (whole chunks).
        data: Vec<u8>,
        /// Unix seconds.
        now: u64,
    },
    /// The install (slot write, swap, health check) finished.
    Installed {
        /// `Ok(self-test microseconds)` or why it failed (rolled back).
        result: Result<u64, String>,
        /// Unix seconds (a manifest that arrived meanwhile is checked then).
        now: u64,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Persist the rotated root.
    SaveRoot(Vec<u8>),
    /// Record a new download (manifest), emptying any previous one.
    StartDownload {
        /// Signed manifest bytes.
        manifest: Vec<u8>,
        /// Chunk size.
        chunk_size: u32,
    },
    /// Publish a chunk request and arm the timeout.
    RequestChunk(ChunkRequest),
    /// Append verified bytes to the download.
    AppendChunk(Vec<u8>),
    /// The package is complete and verified: write the slot, swap, health
    /// check, then feed back [`Input::Installed`].
    Install {
        /// The manifest.
        manifest: Manifest,
        /// Its signed bytes.
        signed: Vec<u8>,
    },
    /// The live package is re-released under a newer manifest (new counter,
    /// version or rollout): record the manifest, no download needed.
    Adopt {
        /// The manifest.
        manifest: Manifest,
        /// Its signed bytes.
        signed: Vec<u8>,
    },
    /// Forget the download.
    DiscardDownload,
    /// Report to the server.
    Report(Event),
}

#[derive(Clone, Debug)]
struct Download {
    manifest: Manifest,
    signed: Vec<u8>,
    verifier: PackageVerifier,
    chunk_size: u32,
    next: u32,
    total: u32,
}

#[derive(Clone, Debug)]
enum State {
    Idle,
    Downloading(Download),
    Installing { manifest: Manifest },
}

/// The update state machine.
#[derive(Clone, Debug)]
pub struct Machine {
    trust: TrustStore,
    hardware_id: String,
    installed_counter: u64,
    live: Option<[u8; 32]>,
    shadow: Option<[u8; 32]>,
    failed: Vec<[u8; 32]>,
    reported: Vec<[u8; 32]>,
    chunk_size: u32,
    pending: Option<Vec<u8>>,
    state: State,
}

/// The model a manifest describes.
pub fn model_ref(m: &Manifest) -> ModelRef {
    ModelRef {
        model_id: m.model_id.clone(),
        version: m.version.clone(),
        release_counter: m.release_counter,
        package_sha256: m.package_sha256,
        rollout_id: m.rollout_id.clone(),
    }
}

/// What the device has installed, for a new [`Machine`].
#[derive(Clone, Debug, Default)]
pub struct Installed {
    /// Release counter of the live model.
    pub counter: u64,
    /// Live package SHA-256.
    pub live: Option<[u8; 32]>,
    /// Shadow package SHA-256.
    pub shadow: Option<[u8; 32]>,
    /// Packages that failed their health check.
    pub failed: Vec<[u8; 32]>,
}

impl Machine {
    /// A machine for a device with `hardware_id`, trusting `trust`.
    pub fn new(trust: TrustStore, hardware_id: String, installed: Installed, chunk_size: u32) -> Machine {
        Machine {
            trust,
            hardware_id,
            installed_counter: installed.counter,
            live: installed.live,
            shadow: installed.shadow,
            failed: installed.failed,
            reported: Vec::new(),
            chunk_size,
            pending: None,
            state: State::Idle,
        }
    }

    /// The trusted root.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Whether an install is in flight (shutdown waits for it).
    pub fn installing(&self) -> bool {
        matches!(self.state, State::Installing { .. })
    }

    /// `(model, bytes received, total bytes)` of a download in progress.
    pub fn progress(&self) -> Option<(ModelRef, u64, u64)> {
        match &self.state {
            State::Downloading(d) => Some((model_ref(&d.manifest), d.verifier.received(), d.manifest.package_len)),
            _ => None,
        }
    }

    /// Whether a chunk request is outstanding (the driver keeps a timer then).
    pub fn awaiting_chunk(&self) -> bool {
        matches!(self.state, State::Downloading(_))
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Manifest { bytes, now } => self.on_manifest(bytes, now),
            Input::Root { bytes, now } => self.on_root(&bytes, now),
            Input::Chunk(resp) => self.on_chunk(resp),
            Input::Timeout | Input::Connected => match &self.state {
                State::Downloading(d) => vec![Action::RequestChunk(request(d))],
                _ => Vec::new(),
            },
            Input::Resume { manifest, chunk_size, data, now } => self.on_resume(manifest, chunk_size, &data, now),
            Input::Installed { result, now } => self.on_installed(result, now),
        }
    }

    fn reject(&mut self, key: [u8; 32], m: Option<&Manifest>, reason: String) -> Vec<Action> {
        if self.reported.contains(&key) {
            return Vec::new(); // retained manifests come back on every reconnect: report once
        }
        self.reported.push(key);
        if self.reported.len() > 64 {
            self.reported.remove(0);
        }
        vec![Action::Report(Event::UpdateRejected {
            model_id: m.map(|m| m.model_id.clone()).unwrap_or_default(),
            version: m.map(|m| m.version.clone()).unwrap_or_default(),
            release_counter: m.map_or(0, |m| m.release_counter),
            rollout_id: m.map(|m| m.rollout_id.clone()).unwrap_or_default(),
            reason,
        })]
    }

    fn on_manifest(&mut self, bytes: Vec<u8>, now: u64) -> Vec<Action> {
        let key = edgefleet_protocol::sha256(&bytes);
        let Ok(signed) = Signed::from_bytes(&bytes) else {
            return self.reject(key, None, VerifyError::Encoding.to_string());
        };
        // Peek (untrusted) at the body to recognise what is already installed,
        // so retained manifests for the live model are not "rollback attacks".
        let peek: Option<Manifest> = signed.decode(Kind::Manifest).ok();
        let mut adopt = false;
        if let Some(p) = &peek {
            let current = match p.mode {
                Mode::Live => self.live,
                Mode::Shadow => self.shadow,
            };
            if current == Some(p.package_sha256) {
                if p.mode == Mode::Shadow || p.release_counter <= self.installed_counter {
                    return Vec::new(); // what is installed already
                }
                adopt = true; // same package, newer release
            }
            match &self.state {
                State::Downloading(d) if d.manifest.package_sha256 == p.package_sha256 && d.manifest.mode == p.mode => {
                    if p.release_counter > d.manifest.release_counter {
                        self.pending = Some(bytes); // adopted once this download is installed
                    }
                    return Vec::new();
                }
                State::Installing { .. } => {
                    self.pending = Some(bytes);
                    return Vec::new();
                }
                _ => {}
            }
        }
        let device = DeviceContext { hardware_id: &self.hardware_id, installed_counter: self.installed_counter, now };
        let m = match self.trust.verify_manifest(&signed, &device) {
            Ok(m) => m,
            Err(e) => return self.reject(key, peek.as_ref(), e.to_string()),
        };
        if self.failed.contains(&m.package_sha256) {
            return self.reject(key, Some(&m), "this package failed its health check on this device before".into());
        }
        if adopt {
            self.installed_counter = m.release_counter;
            return vec![Action::Adopt { manifest: m, signed: bytes }];
        }
        let mut actions = Vec::new();
        if let State::Downloading(d) = &self.state {
            if d.manifest.release_counter > m.release_counter {
                return Vec::new(); // already fetching something newer
            }
            actions.push(Action::DiscardDownload);
        }
        let total = chunk_count(m.package_len, self.chunk_size) as u32;
        let d = Download {
            verifier: PackageVerifier::new(&m),
            chunk_size: self.chunk_size,
            next: 0,
            total,
            signed: bytes.clone(),
            manifest: m.clone(),
        };
        actions.push(Action::StartDownload { manifest: bytes, chunk_size: self.chunk_size });
        actions.push(Action::Report(Event::DownloadStarted { model: model_ref(&m), mode: m.mode }));
        actions.push(Action::RequestChunk(request(&d)));
        self.state = State::Downloading(d);
        actions
    }

    fn on_root(&mut self, bytes: &[u8], now: u64) -> Vec<Action> {
        let key = edgefleet_protocol::sha256(bytes);
        let signed = match Signed::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => return self.reject(key, None, format!("root: {e}")),
        };
        match self.trust.update_root(signed, now) {
            Ok(true) => vec![
                Action::SaveRoot(bytes.to_vec()),
                Action::Report(Event::RootUpdated { version: self.trust.root().version }),
            ],
            Ok(false) => Vec::new(),
            Err(VerifyError::RootVersion { .. }) => Vec::new(), // an old retained root
            Err(e) => self.reject(key, None, format!("root: {e}")),
        }
    }

    fn on_chunk(&mut self, resp: ChunkResponse) -> Vec<Action> {
        let State::Downloading(d) = &mut self.state else { return Vec::new() };
        if resp.package_sha256 != d.manifest.package_sha256 || resp.index != d.next {
            return Vec::new(); // stale or duplicate
        }
        match resp.status {
            ChunkStatus::Ok => {}
            status => {
                let (m, key) = (d.manifest.clone(), edgefleet_protocol::sha256(&d.signed));
                self.state = State::Idle;
                let mut a = vec![Action::DiscardDownload];
                a.extend(self.reject(key, Some(&m), format!("the server cannot serve the package ({status:?})")));
                return a;
            }
        }
        let expected = (d.manifest.package_len - d.next as u64 * d.chunk_size as u64).min(d.chunk_size as u64);
        let step = if resp.data.len() as u64 > expected {
            Err(VerifyError::TooLong { declared: d.manifest.package_len })
        } else {
            d.verifier.update(&resp.data)
        };
        if let Err(e) = step {
            return self.fail_download(e);
        }
        if (resp.data.len() as u64) < expected {
            // A short chunk that is not the last: wait for a proper answer.
            return vec![Action::RequestChunk(request(d))];
        }
        let mut actions = vec![Action::AppendChunk(resp.data)];
        d.next += 1;
        if d.next < d.total {
            actions.push(Action::RequestChunk(request(d)));
            return actions;
        }
        let verifier = d.verifier.clone();
        if let Err(e) = verifier.finish() {
            return self.fail_download(e);
        }
        let (manifest, signed) = (d.manifest.clone(), d.signed.clone());
        self.state = State::Installing { manifest: manifest.clone() };
        actions.push(Action::Install { manifest, signed });
        actions
    }

    fn fail_download(&mut self, e: VerifyError) -> Vec<Action> {
        let State::Downloading(d) = std::mem::replace(&mut self.state, State::Idle) else { return Vec::new() };
        let mut a = vec![Action::DiscardDownload];
        a.extend(self.reject(edgefleet_protocol::sha256(&d.signed), Some(&d.manifest), e.to_string()));
        a
    }

    fn on_resume(&mut self, manifest: Vec<u8>, chunk_size: u32, data: &[u8], now: u64) -> Vec<Action> {
        let Ok(signed) = Signed::from_bytes(&manifest) else { return vec![Action::DiscardDownload] };
        let device = DeviceContext { hardware_id: &self.hardware_id, installed_counter: self.installed_counter, now };
        let m = match self.trust.verify_manifest(&signed, &device) {
            Ok(m) if !self.failed.contains(&m.package_sha256) && chunk_size > 0 => m,
            _ => return vec![Action::DiscardDownload], // expired meanwhile, superseded, or failed before
        };
        let mut verifier = PackageVerifier::new(&m);
        if verifier.update(data).is_err() {
            return vec![Action::DiscardDownload];
        }
        let total = chunk_count(m.package_len, chunk_size) as u32;
        let next = chunk_count(data.len() as u64, chunk_size) as u32;
        let d = Download { manifest: m, signed: manifest, verifier, chunk_size, next, total };
        if next >= total {
            if d.verifier.clone().finish().is_err() {
                return vec![Action::DiscardDownload];
            }
            self.state = State::Installing { manifest: d.manifest.clone() };
            return vec![Action::Install { manifest: d.manifest, signed: d.signed }];
        }
        let a = vec![Action::RequestChunk(request(&d))];
        self.state = State::Downloading(d);
        a
    }

    fn on_installed(&mut self, result: Result<u64, String>, now: u64) -> Vec<Action> {
        let State::Installing { manifest } = std::mem::replace(&mut self.state, State::Idle) else { return Vec::new() };
        let mut actions = vec![Action::DiscardDownload];
        match result {
            Ok(_) => match manifest.mode {
                Mode::Live => {
                    self.live = Some(manifest.package_sha256);
                    self.installed_counter = manifest.release_counter;
                }
                Mode::Shadow => self.shadow = Some(manifest.package_sha256),
            },
            Err(_) => self.failed.push(manifest.package_sha256),
        }
        if let Some(next) = self.pending.take() {
            actions.extend(self.on_manifest(next, now));
        }
        actions
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn request(d: &Download) -> ChunkRequest {
    ChunkRequest { package_sha256: d.manifest.package_sha256, index: d.next, chunk_size: d.chunk_size }
}

#[cfg(test)]
mod tests {
    use edgefleet_protocol::{RoleKeys, Root, SecretKey, chunks::serve, sha256};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32])
    }

    fn trust() -> TrustStore {
        let r = Root {
            version: 1,
            expires: NOW + 1_000_000,
            keys: vec![key(1).public(), key(2).public()],
            root: RoleKeys { keys: vec![key(1).public().id()], threshold: 1 },
            targets: RoleKeys { keys: vec![key(2).public().id()], threshold: 1 },
            revoked: vec![],
        };
        TrustStore::from_pinned(Signed::sign(Kind::Root, &r, &[&key(1)]).unwrap()).unwrap()
    }

    fn package(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn manifest(pkg: &[u8], counter: u64) -> Manifest {
        Manifest {
            model_id: "kws".into(),
            version: format!("v{counter}"),
            release_counter: counter,
            package_len: pkg.len() as u64,
            package_sha256: sha256(pkg),
            hardware_ids: vec!["rpi4".into()],
            expires: NOW + 3600,
            rollout_id: "r".into(),
            reference_profile_sha256: [0; 32],
            mode: Mode::Live,
        }
    }

    fn signed(m: &Manifest, k: &SecretKey) -> Vec<u8> {
        Signed::sign(Kind::Manifest, m, &[k]).unwrap().to_bytes().unwrap()
    }

    fn machine() -> Machine {
        Machine::new(trust(), "rpi4".into(), Installed { counter: 1, ..Installed::default() }, 10)
    }

    /// Plays the server: answers chunk requests from `pkg` until an install or nothing is asked.
    fn run_download(m: &mut Machine, mut actions: Vec<Action>, pkg: &[u8]) -> (Vec<u8>, Vec<Action>) {
        let mut stored = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let Some(req) = actions.iter().find_map(|a| if let Action::RequestChunk(r) = a { Some(*r) } else { None })
            else {
                break;
            };
            for a in &actions {
                if let Action::AppendChunk(b) = a {
                    stored.extend_from_slice(b);
                }
            }
            seen.extend(actions.clone());
            actions = m.handle(Input::Chunk(serve(pkg, &sha256(pkg), &req)));
        }
        for a in &actions {
            if let Action::AppendChunk(b) = a {
                stored.extend_from_slice(b);
            }
        }
        seen.extend(actions);
        (stored, seen)
    }

    fn rejected(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::Report(Event::UpdateRejected { reason, .. }) => Some(reason.clone()),
            _ => None,
        })
    }

    #[test]
    fn downloads_verifies_installs() {
        let pkg = package(95, 1);
        let m0 = manifest(&pkg, 2);
        let mut m = machine();
        let a = m.handle(Input::Manifest { bytes: signed(&m0, &key(2)), now: NOW });
        assert!(matches!(a[0], Action::StartDownload { chunk_size: 10, .. }));
        let (stored, seen) = run_download(&mut m, a, &pkg);
        assert_eq!(stored, pkg);
        assert!(seen.iter().any(|a| matches!(a, Action::Install { manifest, .. } if *manifest == m0)));
        assert!(m.installing());
        let a = m.handle(Input::Installed { result: Ok(120), now: NOW });
        assert_eq!(a, vec![Action::DiscardDownload]);
        // The same (retained) manifest again: already live, nothing to do.
        assert!(m.handle(Input::Manifest { bytes: signed(&m0, &key(2)), now: NOW }).is_empty());
    }

    #[test]
    fn each_attack_is_rejected_with_its_reason() {
        let pkg = package(50, 2);
        let mut m = machine();
        let wrong_key = signed(&manifest(&pkg, 2), &key(9));
        assert!(
            rejected(&m.handle(Input::Manifest { bytes: wrong_key, now: NOW })).unwrap().contains("does not authorize")
        );
        let old = signed(&manifest(&pkg, 1), &key(2));
        assert!(rejected(&m.handle(Input::Manifest { bytes: old, now: NOW })).unwrap().contains("rollback"));
        let mut e = manifest(&pkg, 3);
        e.expires = NOW - 1;
        assert!(
            rejected(&m.handle(Input::Manifest { bytes: signed(&e, &key(2)), now: NOW })).unwrap().contains("freeze")
        );
        let mut h = manifest(&pkg, 4);
        h.hardware_ids = vec!["other".into()];
        assert!(
            rejected(&m.handle(Input::Manifest { bytes: signed(&h, &key(2)), now: NOW })).unwrap().contains("hardware")
        );
        assert!(rejected(&m.handle(Input::Manifest { bytes: b"junk".to_vec(), now: NOW })).is_some());
        // A rejection is reported once, not on every redelivery.
        let again = signed(&manifest(&pkg, 1), &key(2));
        assert!(m.handle(Input::Manifest { bytes: again, now: NOW }).is_empty());
    }

    #[test]
    fn endless_data_and_wrong_bytes_abort_the_download() {
        let pkg = package(25, 3);
        let mut m = machine();
        let a = m.handle(Input::Manifest { bytes: signed(&manifest(&pkg, 2), &key(2)), now: NOW });
        let Some(Action::RequestChunk(req)) = a.into_iter().find(|x| matches!(x, Action::RequestChunk(_))) else {
            panic!()
        };
        // A chunk longer than asked for.
        let mut resp = serve(&pkg, &sha256(&pkg), &req);
        resp.data.extend_from_slice(&[0; 5]);
        let a = m.handle(Input::Chunk(resp));
        assert_eq!(a[0], Action::DiscardDownload);
        assert!(rejected(&a).unwrap().contains("endless data"));
        assert!(!m.awaiting_chunk());
        // A package whose bytes differ from the hash.
        let mut bad = pkg.clone();
        bad[24] ^= 1;
        let m2 = manifest(&pkg, 3);
        let a = m.handle(Input::Manifest { bytes: signed(&m2, &key(2)), now: NOW });
        let mut actions = a;
        let mut last = Vec::new();
        while let Some(req) = actions.iter().find_map(|a| if let Action::RequestChunk(r) = a { Some(*r) } else { None })
        {
            let mut r = serve(&bad, &sha256(&bad), &ChunkRequest { package_sha256: sha256(&bad), ..req });
            r.package_sha256 = req.package_sha256;
            actions = m.handle(Input::Chunk(r));
            last = actions.clone();
        }
        assert!(rejected(&last).unwrap().contains("SHA-256"));
    }

    #[test]
    fn resumes_from_the_last_stored_chunk() {
        let pkg = package(95, 4);
        let bytes = signed(&manifest(&pkg, 2), &key(2));
        let mut m = machine();
        let a = m.handle(Input::Resume { manifest: bytes.clone(), chunk_size: 10, data: pkg[..40].to_vec(), now: NOW });
        assert_eq!(
            a,
            vec![Action::RequestChunk(ChunkRequest { package_sha256: sha256(&pkg), index: 4, chunk_size: 10 })]
        );
        let (stored, seen) = run_download(&mut m, a, &pkg);
        assert_eq!(stored, pkg[40..]);
        assert!(seen.iter().any(|a| matches!(a, Action::Install { .. })));
        // A complete download installs straight away; a corrupt one is dropped.
        let mut m = machine();
        let a = m.handle(Input::Resume { manifest: bytes.clone(), chunk_size: 10, data: pkg.clone(), now: NOW });
        assert!(matches!(a[0], Action::Install { .. }));
        let mut corrupt = pkg.clone();
        corrupt[0] ^= 1;
        let mut m = machine();
        assert_eq!(
            m.handle(Input::Resume { manifest: bytes, chunk_size: 10, data: corrupt, now: NOW }),
            vec![Action::DiscardDownload]
        );
    }

    #[test]
    fn reconnect_and_timeout_re_request_the_same_chunk() {
        let pkg = package(30, 5);
        let mut m = machine();
        let a = m.handle(Input::Manifest { bytes: signed(&manifest(&pkg, 2), &key(2)), now: NOW });
        let first = a.iter().find_map(|x| if let Action::RequestChunk(r) = x { Some(*r) } else { None }).unwrap();
        assert_eq!(m.handle(Input::Timeout), vec![Action::RequestChunk(first)]);
        assert_eq!(m.handle(Input::Connected), vec![Action::RequestChunk(first)]);
        // A duplicate of a chunk already taken is ignored.
        let r = serve(&pkg, &sha256(&pkg), &first);
        assert_eq!(m.handle(Input::Chunk(r.clone())).len(), 2);
        assert!(m.handle(Input::Chunk(r)).is_empty());
    }

    #[test]
    fn a_failed_health_check_is_never_retried_and_newer_supersedes() {
        let pkg = package(20, 6);
        let mut m = machine();
        let bytes = signed(&manifest(&pkg, 2), &key(2));
        let a = m.handle(Input::Manifest { bytes: bytes.clone(), now: NOW });
        run_download(&mut m, a, &pkg);
        m.handle(Input::Installed { result: Err("self-test output differs".into()), now: NOW });
        // The same package under a new manifest (new counter) is refused.
        let again = signed(&manifest(&pkg, 3), &key(2));
        assert!(rejected(&m.handle(Input::Manifest { bytes: again, now: NOW })).unwrap().contains("health check"));
        // A newer release of the live package is adopted without a download.
        let pkg_live = package(20, 9);
        let mut m2 = machine();
        let a = m2.handle(Input::Manifest { bytes: signed(&manifest(&pkg_live, 2), &key(2)), now: NOW });
        run_download(&mut m2, a, &pkg_live);
        m2.handle(Input::Installed { result: Ok(1), now: NOW });
        let a = m2.handle(Input::Manifest { bytes: signed(&manifest(&pkg_live, 7), &key(2)), now: NOW });
        assert!(matches!(&a[..], [Action::Adopt { manifest, .. }] if manifest.release_counter == 7), "{a:?}");
        assert!(m2.handle(Input::Manifest { bytes: signed(&manifest(&pkg_live, 7), &key(2)), now: NOW }).is_empty());
        // A manifest arriving during an install waits, then runs.
        let pkg2 = package(20, 7);
        let a = m.handle(Input::Manifest { bytes: signed(&manifest(&pkg2, 4), &key(2)), now: NOW });
        run_download(&mut m, a, &pkg2);
        assert!(m.installing());
        let pkg3 = package(20, 8);
        assert!(m.handle(Input::Manifest { bytes: signed(&manifest(&pkg3, 5), &key(2)), now: NOW }).is_empty());
        let a = m.handle(Input::Installed { result: Ok(1), now: NOW });
        assert!(a.iter().any(|x| matches!(x, Action::StartDownload { .. })), "{a:?}");
    }
}
