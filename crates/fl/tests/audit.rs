//! The audit trail: committed blocks survive a kill at any byte, damage anywhere is
//! refused naming its block, rollbacks are checked.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_fl::audit::{
    model_hash, AuditTrail, ChainInfo, Member, Record, LOG_FILE, MODELS_DIR,
};
use x0tta6bl4_fl::committee::{CommitteeConfig, Decision};
use x0tta6bl4_fl::committee_sim::commit_in_process;
use x0tta6bl4_fl::keys::{EcdsaKey, PublicKeys};
use x0tta6bl4_fl::{Authenticator, NodeName};

struct Chain {
    keys: Vec<(NodeName, Arc<dyn Authenticator>)>,
    info: ChainInfo,
}

fn chain(candidates: usize) -> Chain {
    let mut keys = Vec::new();
    let mut members = Vec::new();
    for i in 0..candidates {
        let name = NodeName::new(&format!("validator-{i}")).unwrap();
        let (key, _) = EcdsaKey::generate().unwrap();
        members.push(Member {
            name: name.clone(),
            credential: hex::encode(key.public_key()),
        });
        keys.push((name, Arc::new(key) as Arc<dyn Authenticator>));
    }
    Chain {
        keys,
        info: ChainInfo {
            chain_id: "audit-test".into(),
            f: 1,
            epoch_len: 2,
            members,
        },
    }
}

fn commit(c: &Chain, trail: &mut AuditTrail, round: u64, model: &[f32], rollback_to: Option<u64>) {
    let hash = trail.store_model(model).unwrap();
    let decision = Decision {
        round,
        model_hash: hash,
        participants: vec![NodeName::new("p1").unwrap(), NodeName::new("p2").unwrap()],
        aggregator: "median".into(),
        suspected: vec![NodeName::new("p2").unwrap()],
        epsilon: Some(0.25 * round as f64),
        accuracy: Some(0.5 + 0.01 * round as f64),
        rollback_to,
        coordinator: None,
        handover: None,
        signed: None,
    };
    commit_decision(c, trail, decision);
}

fn commit_decision(c: &Chain, trail: &mut AuditTrail, decision: Decision) {
    let cfg = CommitteeConfig {
        chain_id: c.info.chain_id.clone(),
        candidates: c.info.candidates(),
        f: c.info.f,
        epoch_len: c.info.epoch_len,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let verifier = c.info.verifier(Arc::new(PublicKeys)).unwrap();
    let (block, qc) =
        commit_in_process(&cfg, &c.keys, &verifier, &trail.blocks(), decision).unwrap();
    trail.append(Record { block, qc }).unwrap();
}

fn model(i: u64) -> Vec<f32> {
    (0..50).map(|j| (i * 100 + j) as f32 * 0.01).collect()
}

/// A trail of 5 blocks (3 epochs of 2 heights: the committee is redrawn twice), the
/// last a rollback to version 2.
fn build(dir: &Path) -> Chain {
    let c = chain(6);
    let mut trail = AuditTrail::create(dir, c.info.clone()).unwrap();
    for r in 1..=4 {
        commit(&c, &mut trail, r, &model(r), None);
    }
    commit(&c, &mut trail, 4, &model(2), Some(2));
    c
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join(MODELS_DIR)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let e = entry.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join(MODELS_DIR)).unwrap() {
        let e = entry.unwrap();
        std::fs::copy(e.path(), to.join(MODELS_DIR).join(e.file_name())).unwrap();
    }
}

#[test]
fn a_trail_verifies_and_reopens_with_every_block() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    assert_eq!(
        AuditTrail::verify(dir.path(), Arc::new(PublicKeys)).unwrap(),
        5
    );
    let (trail, opened) = AuditTrail::open(dir.path()).unwrap();
    assert_eq!(opened.torn_bytes, 0);
    assert_eq!(trail.records().len(), 5);
    let last = &trail.records()[4].block.decision;
    assert_eq!(last.rollback_to, Some(2));
    assert_eq!(trail.model(&last.model_hash).unwrap(), model(2));
    assert_eq!(last.model_hash, model_hash(&model(2)));
    // Epochs of 2 heights: blocks say so.
    let epochs: Vec<u64> = trail.records().iter().map(|r| r.block.epoch).collect();
    assert_eq!(epochs, vec![0, 0, 1, 1, 2]);
}

#[test]
fn a_kill_at_any_byte_loses_no_committed_block() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (full, _) = AuditTrail::open(dir.path()).unwrap();
    let records = full.records().to_vec();
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(ends.len(), 5);
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("trail");
    copy_dir(dir.path(), &d);
    let mut checked = 0;
    // The writer killed after `cut` bytes of the log reached the disk: the first 64
    // bytes, about 400 offsets spread over the rest (each cut costs two fsyncs), and
    // both sides of every line end.
    let stride = bytes.len() / 400 + 1;
    for cut in (0..=bytes.len())
        .filter(|&c| c <= 64 || c % stride == 0 || ends.iter().any(|&e| c + 1 >= e && c <= e + 1))
    {
        std::fs::write(d.join(LOG_FILE), &bytes[..cut]).unwrap();
        let durable = ends.iter().filter(|&&e| e <= cut).count();
        let (mut trail, opened) = AuditTrail::open(&d).unwrap();
        assert_eq!(trail.records(), &records[..durable], "cut at {cut}");
        let torn = cut - if durable == 0 { 0 } else { ends[durable - 1] };
        assert_eq!(opened.torn_bytes as usize, torn, "cut at {cut}");
        // The torn tail is gone from the file; the next block lands on a clean line.
        let len = std::fs::metadata(d.join(LOG_FILE)).unwrap().len() as usize;
        assert_eq!(len, cut - torn, "cut at {cut}");
        if durable < records.len() {
            trail.append(records[durable].clone()).unwrap();
            drop(trail);
            let (again, _) = AuditTrail::open(&d).unwrap();
            assert_eq!(again.records(), &records[..=durable], "cut at {cut}");
            if cut % (stride * 20) == 0 {
                let n = AuditTrail::verify(&d, Arc::new(PublicKeys)).unwrap();
                assert_eq!(n as usize, durable + 1, "cut at {cut}");
            }
        }
        checked += 1;
    }
    assert!(checked > 400, "{checked}");
}

#[test]
fn a_flipped_byte_anywhere_in_the_log_names_its_block() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join(LOG_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let mut line = 1u64;
    let mut tried = 0;
    // The first 40 bytes, every line end and about 500 offsets spread over the rest.
    let stride = bytes.len() / 500 + 1;
    for i in 0..bytes.len() {
        let this_line = line;
        if bytes[i] == b'\n' {
            line += 1;
        }
        if i % stride != 0 && bytes[i] != b'\n' && i > 40 {
            continue;
        }
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x01;
        std::fs::write(&path, &damaged).unwrap();
        let e = AuditTrail::verify(dir.path(), Arc::new(PublicKeys))
            .expect_err(&format!("flip at byte {i} went unnoticed"));
        assert_eq!(e.block, Some(this_line), "flip at byte {i}: {e}");
        // Writers refuse it too (by name), except a damaged last line end, which
        // looks like a torn write and is cut, losing only that last block.
        if let Err(e) = AuditTrail::open(dir.path()) {
            assert_eq!(e.block, Some(this_line), "flip at byte {i}: {e}");
        }
        std::fs::write(&path, &bytes).unwrap();
        tried += 1;
    }
    assert!(tried > 500, "{tried}");
    AuditTrail::verify(dir.path(), Arc::new(PublicKeys)).unwrap();
}

#[test]
fn a_forged_block_with_a_valid_checksum_fails_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join(LOG_FILE);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Rewrite block 3's accuracy and its checksum: only the signatures can tell.
    let mut record: Record = serde_json::from_str(&lines[2][9..]).unwrap();
    record.block.decision.accuracy = Some(0.99);
    let json = serde_json::to_string(&record).unwrap();
    lines[2] = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let e = AuditTrail::verify(dir.path(), Arc::new(PublicKeys)).unwrap_err();
    // Block 3 is named (not block 4, whose link to it also breaks).
    assert_eq!(e.block, Some(3), "{e}");
    assert!(e.what.contains("certificate"), "{e}");
}

#[test]
fn a_damaged_or_missing_model_names_the_block_that_adopted_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let m3 = dir
        .path()
        .join(MODELS_DIR)
        .join(format!("{}.f32", model_hash(&model(3)).hex()));
    let mut bytes = std::fs::read(&m3).unwrap();
    bytes[17] ^= 0x80;
    std::fs::write(&m3, &bytes).unwrap();
    let e = AuditTrail::verify(dir.path(), Arc::new(PublicKeys)).unwrap_err();
    assert_eq!(e.block, Some(3), "{e}");
    std::fs::remove_file(&m3).unwrap();
    let e = AuditTrail::verify(dir.path(), Arc::new(PublicKeys)).unwrap_err();
    assert_eq!(e.block, Some(3), "{e}");
}

#[test]
fn appends_that_do_not_extend_the_chain_or_lack_their_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (mut trail, _) = AuditTrail::open(dir.path()).unwrap();
    let old = trail.records()[1].clone();
    let e = trail.append(old).unwrap_err();
    assert!(e.what.contains("does not extend"), "{e}");
    assert_eq!(trail.records().len(), 5);
    let other = tempfile::tempdir().unwrap();
    let c = chain(4);
    let mut fresh = AuditTrail::create(other.path(), c.info.clone()).unwrap();
    commit(&c, &mut fresh, 1, &model(1), None);
    let mut record = fresh.records()[0].clone();
    drop(fresh);
    // A second trail refuses a block whose model it does not hold.
    let third = tempfile::tempdir().unwrap();
    let mut empty = AuditTrail::create(third.path(), c.info.clone()).unwrap();
    record.block.decision.model_hash = model_hash(&model(9));
    let e = empty.append(record).unwrap_err();
    assert!(e.what.contains("not stored"), "{e}");
    assert!(
        AuditTrail::create(third.path(), c.info).is_err(),
        "created twice"
    );
}

#[test]
fn blocks_re_encode_to_the_same_bytes_for_any_float() {
    // Hashes and signatures cover the JSON a block re-encodes to after parsing: every
    // f64 must parse back to itself (serde_json's float_roundtrip).
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for _ in 0..20_000 {
        let v: f64 = rng.random::<f64>() * 10f64.powi(rng.random_range(-8..8));
        let d = Decision {
            round: 1,
            model_hash: model_hash(&[v as f32]),
            participants: vec![],
            aggregator: "fedavg".into(),
            suspected: vec![],
            epsilon: Some(v),
            accuracy: Some(rng.random::<f64>()),
            rollback_to: None,
            coordinator: None,
            handover: None,
            signed: None,
        };
        let json = serde_json::to_vec(&d).unwrap();
        let back: Decision = serde_json::from_slice(&json).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), json, "{v:e}");
    }
}

/// A coordinator change committed over the mesh names the model of the version it
/// resumes from; `verify` checks that, and names the block of a change that lies.
#[test]
fn a_coordinator_change_must_name_the_model_of_its_version() {
    use x0tta6bl4_fl::committee::Handover;
    let c = chain(6);
    let change = |hash, version| {
        Decision {
            round: 2,
            model_hash: hash,
            participants: Vec::new(),
            aggregator: "fedavg".into(),
            suspected: Vec::new(),
            epsilon: None,
            accuracy: None,
            rollback_to: None,
            coordinator: Some(NodeName::new("validator-1").unwrap()),
            handover: Some(Handover {
                replaces: NodeName::new("validator-0").unwrap(),
                model_version: version,
            }),
            signed: None,
        }
        .sign(&c.keys[2].0, &*c.keys[2].1)
    };
    for (hash_of, version, good) in [(2, 2, true), (1, 2, false), (2, 3, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut trail = AuditTrail::create(dir.path(), c.info.clone()).unwrap();
        commit(&c, &mut trail, 1, &model(1), None);
        commit(&c, &mut trail, 2, &model(2), None);
        let hash = trail.store_model(&model(hash_of)).unwrap();
        commit_decision(&c, &mut trail, change(hash, version));
        let verified = AuditTrail::verify(dir.path(), Arc::new(PublicKeys));
        if good {
            assert_eq!(verified.unwrap(), 3);
        } else {
            let e = verified.unwrap_err();
            assert_eq!(e.block, Some(3), "{e}");
            assert!(e.to_string().contains("coordinator change"), "{e}");
        }
    }
}

/// Over the mesh every decision carries its proposer's signature, a round result its
/// coordinator's: `verify` checks it, and names the block whose signature is missing,
/// someone else's, or damaged (a flipped byte with a recomputed checksum, which the
/// line's CRC would otherwise catch first).
#[test]
fn a_round_result_must_carry_its_coordinators_signature() {
    let c = chain(6);
    let coordinator = c.keys[0].0.clone();
    let round = |trail: &AuditTrail, r: u64| Decision {
        round: r,
        model_hash: trail.store_model(&model(r)).unwrap(),
        participants: vec![c.keys[1].0.clone()],
        aggregator: "fedavg".into(),
        suspected: Vec::new(),
        epsilon: None,
        accuracy: Some(0.5),
        rollback_to: None,
        coordinator: Some(coordinator.clone()),
        handover: None,
        signed: None,
    };
    let build = |last: &dyn Fn(Decision) -> Decision| {
        let dir = tempfile::tempdir().unwrap();
        let mut trail = AuditTrail::create(dir.path(), c.info.clone()).unwrap();
        for r in 1..=2 {
            let d = round(&trail, r).sign(&coordinator, &*c.keys[0].1);
            commit_decision(&c, &mut trail, d);
        }
        let d = last(round(&trail, 3));
        commit_decision(&c, &mut trail, d);
        let d = round(&trail, 4).sign(&coordinator, &*c.keys[0].1);
        commit_decision(&c, &mut trail, d);
        dir
    };
    let good = build(&|d| d.sign(&coordinator, &*c.keys[0].1));
    assert_eq!(
        AuditTrail::verify(good.path(), Arc::new(PublicKeys)).unwrap(),
        4
    );
    let refused = |dir: &Path, what: &str| {
        let e = AuditTrail::verify(dir, Arc::new(PublicKeys)).unwrap_err();
        assert_eq!(e.block, Some(3), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    };
    refused(build(&|d| d).path(), "carries no proposer signature");
    refused(
        build(&|d| d.sign(&c.keys[1].0, &*c.keys[1].1)).path(),
        "signed by validator-1, not by its coordinator",
    );
    // Signed with validator-1's key but claiming validator-0: the validators check
    // the signature before they prepare, so the committee never commits it.
    let dir = tempfile::tempdir().unwrap();
    let trail = AuditTrail::create(dir.path(), c.info.clone()).unwrap();
    let mut forged = round(&trail, 1).sign(&c.keys[1].0, &*c.keys[1].1);
    forged.signed.as_mut().unwrap().by = coordinator.clone();
    let cfg = CommitteeConfig {
        chain_id: c.info.chain_id.clone(),
        candidates: c.info.candidates(),
        f: c.info.f,
        epoch_len: c.info.epoch_len,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let verifier = c.info.verifier(Arc::new(PublicKeys)).unwrap();
    let e = commit_in_process(&cfg, &c.keys, &verifier, &[], forged).unwrap_err();
    assert!(e.contains("proposer signature of validator-0"), "{e}");
    // A flipped byte inside block 3's proposer signature, its line's checksum
    // recomputed: the signature no longer verifies, block 3 is named.
    let path = good.path().join(LOG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let json = lines[2][9..].to_owned();
    let marker = "\"signed\":{\"by\":\"validator-0\",\"signature\":\"";
    let at = json.find(marker).expect("a signed decision") + marker.len() + 10;
    let mut bytes = json.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let json = String::from_utf8(bytes).unwrap();
    lines[2] = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    refused(good.path(), "proposer signature of validator-0");
}
