//! The update-security rules, one test per attack, plus rotation,
//! revocation and thresholds; and the drift, latency and topic helpers.

use edgefleet_protocol::drift::{Sketch, drift, ks_estimate, psi};
use edgefleet_protocol::profile::{FeatureProfile, ReferenceProfile, SelfTest};
use edgefleet_protocol::{
    ChunkRequest, ChunkStatus, DeviceContext, Kind, LatencyStats, Manifest, Mode, PackageVerifier, RoleKeys, Root,
    SecretKey, Signed, TrustStore, VerifyError, chunks, latency_bucket, latency_bucket_upper, sha256, topics,
};

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn root(version: u32, root_keys: &[&SecretKey], threshold: u32, targets: &[&SecretKey], t_threshold: u32) -> Root {
    let mut keys: Vec<_> = root_keys.iter().chain(targets).map(|k| k.public()).collect();
    keys.dedup();
    Root {
        version,
        expires: NOW + 365 * 86_400,
        keys,
        root: RoleKeys { keys: root_keys.iter().map(|k| k.public().id()).collect(), threshold },
        targets: RoleKeys { keys: targets.iter().map(|k| k.public().id()).collect(), threshold: t_threshold },
        revoked: vec![],
    }
}

fn trust() -> TrustStore {
    let r = root(1, &[&key(1)], 1, &[&key(10)], 1);
    TrustStore::from_pinned(Signed::sign(Kind::Root, &r, &[&key(1)]).expect("sign")).expect("pinned root")
}

const PACKAGE: &[u8] = b"pretend this is a .efm package of some length";

fn manifest(counter: u64) -> Manifest {
    Manifest {
        model_id: "kws".into(),
        version: format!("{counter}.0"),
        release_counter: counter,
        package_len: PACKAGE.len() as u64,
        package_sha256: sha256(PACKAGE),
        hardware_ids: vec!["rpi4".into(), "pixel8".into()],
        expires: NOW + 86_400,
        rollout_id: "r1".into(),
        reference_profile_sha256: [0; 32],
        mode: Mode::Live,
    }
}

fn device() -> DeviceContext<'static> {
    DeviceContext { hardware_id: "rpi4", installed_counter: 1, now: NOW }
}

fn sign(m: &Manifest, keys: &[&SecretKey]) -> Signed {
    Signed::sign(Kind::Manifest, m, keys).expect("sign")
}

#[test]
fn a_good_manifest_verifies_and_round_trips_the_wire() {
    let signed = sign(&manifest(2), &[&key(10)]);
    let wire = signed.to_bytes().expect("encode");
    let back = Signed::from_bytes(&wire).expect("decode");
    assert_eq!(trust().verify_manifest(&back, &device()).expect("valid"), manifest(2));
}

#[test]
fn attack_bad_signature() {
    let mut signed = sign(&manifest(2), &[&key(10)]);
    signed.body[3] ^= 1; // body changed after signing
    assert_eq!(
        trust().verify_manifest(&signed, &device()),
        Err(VerifyError::BadSignature { key_id: key(10).public().id() })
    );
}

#[test]
fn attack_wrong_key() {
    let signed = sign(&manifest(2), &[&key(66)]);
    assert_eq!(
        trust().verify_manifest(&signed, &device()),
        Err(VerifyError::UnknownKey { key_id: key(66).public().id() })
    );
    // A root key is not a release key either.
    let signed = sign(&manifest(2), &[&key(1)]);
    assert!(matches!(trust().verify_manifest(&signed, &device()), Err(VerifyError::UnknownKey { .. })));
}

#[test]
fn attack_revoked_key() {
    let mut t = trust();
    let mut r2 = root(2, &[&key(1)], 1, &[&key(10), &key(11)], 1);
    r2.revoked = vec![key(10).public().id()];
    t.update_root(Signed::sign(Kind::Root, &r2, &[&key(1)]).expect("sign"), NOW).expect("rotation");
    let signed = sign(&manifest(2), &[&key(10)]);
    assert_eq!(t.verify_manifest(&signed, &device()), Err(VerifyError::RevokedKey { key_id: key(10).public().id() }));
    assert!(t.verify_manifest(&sign(&manifest(2), &[&key(11)]), &device()).is_ok());
}

#[test]
fn attack_below_threshold() {
    let r = root(1, &[&key(1)], 1, &[&key(10), &key(11), &key(12)], 2);
    let t = TrustStore::from_pinned(Signed::sign(Kind::Root, &r, &[&key(1)]).expect("sign")).expect("root");
    let one = sign(&manifest(2), &[&key(10)]);
    assert_eq!(t.verify_manifest(&one, &device()), Err(VerifyError::BelowThreshold { valid: 1, needed: 2 }));
    // The same key twice counts once.
    let mut twice = one.clone();
    twice.signatures.push(twice.signatures[0]);
    assert_eq!(t.verify_manifest(&twice, &device()), Err(VerifyError::BelowThreshold { valid: 1, needed: 2 }));
    let mut two = one;
    two.add_signature(&key(12));
    assert!(t.verify_manifest(&two, &device()).is_ok());
}

#[test]
fn attack_rollback() {
    let signed = sign(&manifest(1), &[&key(10)]);
    assert_eq!(trust().verify_manifest(&signed, &device()), Err(VerifyError::Rollback { offered: 1, installed: 1 }));
}

#[test]
fn attack_freeze() {
    let mut m = manifest(2);
    m.expires = NOW - 1;
    assert_eq!(
        trust().verify_manifest(&sign(&m, &[&key(10)]), &device()),
        Err(VerifyError::Expired { expires: NOW - 1, now: NOW })
    );
}

#[test]
fn attack_mix_and_match() {
    let mut m = manifest(2);
    m.hardware_ids = vec!["stm32f4".into()];
    assert_eq!(trust().verify_manifest(&sign(&m, &[&key(10)]), &device()), Err(VerifyError::HardwareMismatch));
}

#[test]
fn attack_endless_data_and_wrong_hash() {
    let m = manifest(2);
    let mut v = PackageVerifier::new(&m);
    v.update(PACKAGE).expect("declared bytes");
    assert_eq!(v.update(b"x"), Err(VerifyError::TooLong { declared: PACKAGE.len() as u64 }));
    assert!(v.clone().finish().is_ok(), "the extra byte was refused, not counted");

    let mut bad = PACKAGE.to_vec();
    bad[0] ^= 1;
    let mut v = PackageVerifier::new(&m);
    v.update(&bad).expect("length fine");
    assert_eq!(v.finish(), Err(VerifyError::HashMismatch));

    let mut v = PackageVerifier::new(&m);
    v.update(&PACKAGE[..10]).expect("prefix");
    assert!(matches!(v.finish(), Err(VerifyError::TooShort { received: 10, .. })));
}

#[test]
fn a_root_signature_cannot_sign_a_manifest() {
    // Same bytes, other kind: the domain separation makes the signature invalid.
    let m = sign(&manifest(2), &[&key(10)]);
    let mut as_root = m.clone();
    as_root.kind = Kind::Root;
    assert_eq!(trust().verify_manifest(&as_root, &device()), Err(VerifyError::WrongKind));
    let mut forged = m;
    forged.kind = Kind::Uplink;
    let t = forged.tally(&[key(10).public()], &[key(10).public().id()], &[]);
    assert_eq!((t.valid, t.bad), (0, Some(key(10).public().id())));
}

#[test]
fn root_rotation_needs_old_and_new_root_keys() {
    let mut t = trust();
    let r2 = root(2, &[&key(2)], 1, &[&key(20)], 1);
    // Signed only by the new root key: the old root did not authorize it.
    let only_new = Signed::sign(Kind::Root, &r2, &[&key(2)]).expect("sign");
    assert!(matches!(t.update_root(only_new, NOW), Err(VerifyError::UnknownKey { .. })));
    // Signed only by the old key: the new root's own threshold is not met.
    let only_old = Signed::sign(Kind::Root, &r2, &[&key(1)]).expect("sign");
    assert!(matches!(t.update_root(only_old, NOW), Err(VerifyError::UnknownKey { .. })));
    let both = Signed::sign(Kind::Root, &r2, &[&key(1), &key(2)]).expect("sign");
    assert_eq!(t.update_root(both.clone(), NOW), Ok(true));
    assert_eq!(t.update_root(both, NOW), Ok(false), "idempotent");
    assert_eq!(t.root().version, 2);
    // The old release key is gone, the new one works.
    assert!(matches!(
        t.verify_manifest(&sign(&manifest(2), &[&key(10)]), &device()),
        Err(VerifyError::UnknownKey { .. })
    ));
    assert!(t.verify_manifest(&sign(&manifest(2), &[&key(20)]), &device()).is_ok());
    // A replayed older root is refused.
    let r1 = root(1, &[&key(1)], 1, &[&key(10)], 1);
    let replay = Signed::sign(Kind::Root, &r1, &[&key(1), &key(2)]).expect("sign");
    assert_eq!(t.update_root(replay, NOW), Err(VerifyError::RootVersion { current: 2, offered: 1 }));
}

#[test]
fn inconsistent_roots_are_refused() {
    let mut r = root(1, &[&key(1)], 1, &[&key(10)], 1);
    r.targets.threshold = 0;
    assert!(matches!(
        TrustStore::from_pinned(Signed::sign(Kind::Root, &r, &[&key(1)]).expect("sign")),
        Err(VerifyError::Invalid(_))
    ));
    let mut r = root(1, &[&key(1)], 1, &[&key(10)], 1);
    r.targets.threshold = 2;
    assert!(TrustStore::from_pinned(Signed::sign(Kind::Root, &r, &[&key(1)]).expect("sign")).is_err());
    assert_eq!(Signed::from_bytes(b"\xff\xff garbage"), Err(VerifyError::Encoding));
}

#[test]
fn chunks_are_served_exactly() {
    let pkg: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let h = sha256(&pkg);
    let mut out = Vec::new();
    for index in 0..chunks::chunk_count(pkg.len() as u64, 16_384) as u32 {
        let r = chunks::serve(&pkg, &h, &ChunkRequest { package_sha256: h, index, chunk_size: 16_384 });
        assert_eq!(r.status, ChunkStatus::Ok);
        out.extend_from_slice(&r.data);
    }
    assert_eq!(out, pkg);
    let past = chunks::serve(&pkg, &h, &ChunkRequest { package_sha256: h, index: 3, chunk_size: 16_384 });
    assert_eq!(past.status, ChunkStatus::BadRequest);
    let other = chunks::serve(&pkg, &h, &ChunkRequest { package_sha256: [9; 32], index: 0, chunk_size: 16_384 });
    assert_eq!(other.status, ChunkStatus::NotFound);
}

#[test]
fn topics_parse_and_reject_wildcards() {
    assert_eq!(topics::parse(&topics::uplink("dev-1")), Some(topics::Topic::Uplink("dev-1")));
    assert_eq!(topics::parse(&topics::group_manifest("boards")), Some(topics::Topic::GroupManifest("boards")));
    assert_eq!(topics::parse(&topics::root()), Some(topics::Topic::Root));
    assert_eq!(topics::parse("ef/v1/d/+/up"), None);
    assert_eq!(topics::parse("ef/v1/d/a/b/up"), None);
    assert!(!topics::valid_id("a/b") && !topics::valid_id("") && !topics::valid_id("#"));
}

#[test]
fn latency_buckets_are_monotonic_and_tight() {
    let mut last = 0;
    for us in 0..200_000u64 {
        let b = latency_bucket(us);
        assert!(b >= last);
        last = b;
        assert!(us < latency_bucket_upper(b), "{us} us not below its bucket's bound");
        assert!(latency_bucket_upper(b) as f64 <= (us as f64 + 1.0) * 1.25 + 1.0);
    }
    let mk = |vals: &[u64]| {
        let mut s = LatencyStats {
            count: vals.len() as u64,
            max_us: *vals.iter().max().expect("values"),
            ..Default::default()
        };
        for &v in vals {
            let b = latency_bucket(v);
            match s.buckets.iter_mut().find(|(x, _)| *x == b) {
                Some(e) => e.1 += 1,
                None => s.buckets.push((b, 1)),
            }
        }
        s.buckets.sort_unstable();
        s
    };
    let mut a = mk(&[100; 90]);
    a.merge(&mk(&[1000; 10]));
    assert_eq!(a.count, 100);
    assert!(a.p50_us >= 100 && a.p50_us < 125, "{}", a.p50_us);
    assert_eq!(a.p99_us, 1000);
}

fn profile_of(samples: &[Vec<i8>]) -> FeatureProfile {
    let refs: Vec<&[i8]> = samples.iter().map(Vec::as_slice).collect();
    FeatureProfile::build(&[1, 20, 3], &refs, 10)
}

fn noise(seed: u64, n: usize, lo: i16, hi: i16) -> Vec<i8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + (s % (hi - lo + 1) as u64) as i16) as i8
        })
        .collect()
}

#[test]
fn same_distribution_is_stable_shifted_is_drift() {
    let calib: Vec<Vec<i8>> = (0..50).map(|i| noise(i + 1, 60, -60, 60)).collect();
    let p = profile_of(&calib);
    assert_eq!(p.features, 3, "features along the innermost axis");
    let (map, lut) = (p.feature_map(), p.bin_lut());
    let mut same = Sketch::new(&p);
    for i in 0..200 {
        same.add(&map, &lut, &noise(1000 + i, 60, -60, 60));
    }
    let d = drift(&p, &same).expect("counts");
    assert!(d.psi < 0.1, "same distribution: {d:?}");
    // Shift one feature (channel 1) by +30.
    let mut shifted = Sketch::new(&p);
    for i in 0..200 {
        let mut x = noise(5000 + i, 60, -60, 60);
        for (k, v) in x.iter_mut().enumerate() {
            if k % 3 == 1 {
                *v = v.saturating_add(30);
            }
        }
        shifted.add(&map, &lut, &x);
    }
    let d = drift(&p, &shifted).expect("counts");
    assert!(d.psi > 0.25 && d.worst_feature == 1, "{d:?}");
    assert!(d.psi_mean < d.psi && d.ks > 0.1 && d.js > 0.0);
    // Sketches merge by adding.
    let mut m = same.clone();
    m.merge(&shifted).expect("same bins");
    assert_eq!(m.total(), same.total() + shifted.total());
    assert!(m.merge(&Sketch::default()).is_err());
}

#[test]
fn score_functions_on_known_values() {
    assert_eq!(psi(&[0.5, 0.5], &[50, 50]), Some(0.0));
    let v = psi(&[0.5, 0.5], &[90, 10]).expect("psi");
    assert!((v - (0.4 * (0.9f32 / 0.5).ln() - 0.4 * (0.1f32 / 0.5).ln())).abs() < 1e-4, "{v}");
    assert_eq!(ks_estimate(&[0.25, 0.25, 0.5], &[50, 0, 50]), Some(0.25));
    assert_eq!(psi(&[1.0], &[]), None);
}

#[test]
fn profile_round_trips_and_rejects_inconsistency() {
    let calib: Vec<Vec<i8>> = (0..10).map(|i| noise(i + 1, 60, -100, 100)).collect();
    let prof = ReferenceProfile {
        version: 1,
        samples: 10,
        inputs: vec![profile_of(&calib)],
        output: None,
        selftest: Some(SelfTest { inputs: vec![calib[0].clone()], outputs: vec![vec![1, 2, 3]] }),
    };
    let bytes = prof.to_bytes().expect("encode");
    assert_eq!(ReferenceProfile::from_bytes(&bytes).expect("decode"), prof);
    let mut bad = prof.clone();
    bad.inputs[0].reference[0].push(0.5);
    assert!(ReferenceProfile::from_bytes(&bad.to_bytes().expect("encode")).is_err());
}
