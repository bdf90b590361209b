//! Damage to every kind of repository object: for each kind (data pack,
//! tree pack, index file, snapshot, key file, config) and each mutation
//! (flip a byte, truncate, zero a range, delete), applied to a fresh copy of
//! a repository with three snapshots and two keys:
//!
//! (a) `verify --read-data` exits non-zero, unless the damage is
//!     undetectable by nature (a deleted snapshot looks like a forgotten one;
//!     a deleted key file when another key remains looks like `key remove`;
//!     a JSON file whose bytes changed but whose meaning did not);
//! (b) `restore` of every snapshot either exits 0 with a bit-exact tree, or
//!     exits non-zero, and then every restored file whose bytes differ from
//!     the original is named on stderr.
//!
//! The default run tries one random place per kind and mutation; the
//! ignored `torture_corruption` tries `SNAP_TORTURE_N` (default 20) per pair,
//! alternating between a fresh and a copied (warm) index cache.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::util::*;

const SECOND_PASSWORD: &str = "the second password";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    DataPack,
    TreePack,
    Index,
    Snapshot,
    Key,
    Config,
}

const KINDS: [Kind; 6] = [
    Kind::DataPack,
    Kind::TreePack,
    Kind::Index,
    Kind::Snapshot,
    Kind::Key,
    Kind::Config,
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mutation {
    Flip,
    Truncate,
    Zero,
    Delete,
}

const MUTATIONS: [Mutation; 4] = [Mutation::Flip, Mutation::Truncate, Mutation::Zero, Mutation::Delete];

/// A repository with three snapshots of a changing tree and two key files.
struct Fixture {
    snap: Snap,
    src: PathBuf,
    /// (snapshot id, copy of the source it holds).
    states: Vec<(String, PathBuf)>,
    /// Objects by kind, as paths relative to the repository.
    objects: BTreeMap<Kind, Vec<PathBuf>>,
    /// The key file `PASSWORD` opens (relative path).
    main_key: PathBuf,
}

fn write_state(src: &Path, generation: u64) {
    match generation {
        0 => {
            fs::create_dir_all(src.join("sub/deeper")).unwrap();
            write_random_file(&src.join("a.bin"), 300_000, 1);
            fs::write(src.join("b.txt"), "compressible text\n".repeat(4000)).unwrap();
            write_random_file(&src.join("sub/c.bin"), 200_000, 2);
            fs::write(src.join("sub/deeper/d.txt"), "small\n").unwrap();
            fs::write(src.join("empty"), "").unwrap();
        }
        1 => {
            let mut a = fs::read(src.join("a.bin")).unwrap();
            a[100_000..104_000].copy_from_slice(&random_bytes(4000, 3));
            fs::write(src.join("a.bin"), a).unwrap();
            write_random_file(&src.join("e.bin"), 150_000, 4);
        }
        _ => {
            fs::remove_file(src.join("sub/c.bin")).unwrap();
            write_random_file(&src.join("sub/f.bin"), 150_000, 5);
            fs::write(src.join("sub/deeper/d.txt"), "small, changed\n").unwrap();
        }
    }
    set_tree_times(src);
}

fn key_ids(snap: &Snap) -> Vec<(String, bool)> {
    parse_json(&snap.ok(&["key", "list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k["current"] == true))
        .collect()
}

fn fixture() -> Fixture {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    let mut states = Vec::new();
    for generation in 0..3 {
        write_state(&src, generation);
        let created = snap.create(&[s(&src)]);
        let copy = snap.scratch().join(format!("state{generation}"));
        copy_dir(&src, &copy);
        states.push((created["id"].as_str().unwrap().to_string(), copy));
    }

    // A second key. Its name must sort after the first key's: keys are tried
    // in name order, and trying the second one (a slow default KDF) first
    // would slow down every command.
    let main_key = key_ids(&snap).into_iter().find(|(_, current)| *current).unwrap().0;
    loop {
        let out = snap
            .command()
            .args(["key", "add", "--json"])
            .env("SNAP_NEW_PASSWORD", SECOND_PASSWORD)
            .output()
            .unwrap();
        assert_code(&out, 0);
        let added = parse_json(&out)["id"].as_str().unwrap().to_string();
        if added > main_key {
            break;
        }
        snap.ok(&["key", "remove", &added]);
    }

    let mut objects: BTreeMap<Kind, Vec<PathBuf>> = BTreeMap::new();
    let rel = |p: &Path| p.strip_prefix(&snap.repo).unwrap().to_path_buf();
    objects.insert(Kind::Config, vec![PathBuf::from("config")]);
    for (kind, dir) in [
        (Kind::Key, "keys"),
        (Kind::Index, "index"),
        (Kind::Snapshot, "snapshots"),
    ] {
        objects.insert(kind, files_under(&snap.repo.join(dir)).iter().map(|p| rel(p)).collect());
    }
    // A pack is a tree pack if `ls` of some snapshot fails without it.
    for (pack, _) in packs(&snap.repo) {
        let hidden = pack.with_file_name(".hidden");
        fs::rename(&pack, &hidden).unwrap();
        snap.drop_tree_cache();
        let holds_trees = states.iter().any(|(id, _)| !snap.run(&["ls", id]).status.success());
        fs::rename(&hidden, &pack).unwrap();
        let kind = if holds_trees { Kind::TreePack } else { Kind::DataPack };
        objects.entry(kind).or_default().push(rel(&pack));
    }
    for kind in KINDS {
        assert!(
            !objects.get(&kind).is_none_or(|o| o.is_empty()),
            "no {kind:?} in the fixture"
        );
    }
    assert_eq!(objects[&Kind::Key].len(), 2);
    Fixture {
        snap,
        src,
        states,
        objects,
        main_key: PathBuf::from("keys").join(main_key),
    }
}

/// Applies `mutation` to the file at `path`; the new bytes (`None`: deleted),
/// or nothing when the mutation would not change the file.
fn mutate(path: &Path, mutation: Mutation, rng: &mut SmallRng) -> Option<Option<Vec<u8>>> {
    let original = fs::read(path).unwrap();
    let len = original.len();
    let mut bytes = original.clone();
    match mutation {
        Mutation::Delete => {
            fs::remove_file(path).unwrap();
            return Some(None);
        }
        Mutation::Flip => {
            let at = rng.random_range(0..len);
            bytes[at] ^= rng.random_range(1..=255u8);
        }
        Mutation::Truncate => bytes.truncate(rng.random_range(0..len)),
        Mutation::Zero => {
            // A range that is already zero changes nothing: try elsewhere.
            for _ in 0..20 {
                let start = rng.random_range(0..len);
                let end = start + rng.random_range(1..=(len - start).min(4096));
                if bytes[start..end].iter().any(|&b| b != 0) {
                    bytes[start..end].fill(0);
                    break;
                }
            }
            if bytes == original {
                return None;
            }
        }
    }
    fs::write(path, &bytes).unwrap();
    Some(Some(bytes))
}

/// How `verify` judged one case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Verdict {
    /// verify exited non-zero.
    Detected,
    /// verify passed, and rightly: nothing a reader could tell from intact.
    Undetectable,
    /// verify passed real damage.
    Missed,
}

#[derive(Default)]
struct Tally {
    tried: usize,
    verdicts: BTreeMap<Verdict, usize>,
    restores_exact: usize,
    restores_failed: usize,
}

/// One damaged copy: verify it, restore every snapshot, and return the
/// verdict and any broken promise of the restore.
fn run_case(
    fx: &Fixture,
    kind: Kind,
    mutation: Mutation,
    rng: &mut SmallRng,
    warm_cache: bool,
    tally: &mut Tally,
    violations: &mut Vec<String>,
) -> Option<Verdict> {
    let case = Snap::new();
    copy_dir(&fx.snap.repo, &case.repo);
    if warm_cache {
        copy_dir(&fx.snap.cache, &case.cache);
    }
    let candidates = &fx.objects[&kind];
    let object = &candidates[rng.random_range(0..candidates.len())];
    let path = case.repo.join(object);
    let original = fs::read(&path).unwrap();
    let Some(new_bytes) = mutate(&path, mutation, rng) else {
        eprintln!("corruption: {kind:?} {mutation:?}: no change possible, skipped");
        return None;
    };
    let what = format!(
        "{kind:?} {mutation:?} of {} ({} -> {} bytes, {} cache)",
        object.display(),
        original.len(),
        new_bytes.as_ref().map_or(0, |b| b.len()),
        if warm_cache { "warm" } else { "fresh" }
    );
    tally.tried += 1;

    let verify = case.run(&["verify", "--read-data", "--json"]);
    if panicked(&verify) {
        violations.push(format!("{what}: verify panicked\n{}", describe(&verify)));
    }
    let verdict = if !verify.status.success() {
        Verdict::Detected
    } else {
        let same_json = |new: &[u8]| {
            let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
            parse(&original).is_some() && parse(&original) == parse(new)
        };
        match (kind, &new_bytes) {
            (Kind::Snapshot, None) => Verdict::Undetectable,
            (Kind::Key, None) if *object != fx.main_key => Verdict::Undetectable,
            (Kind::Key | Kind::Config, Some(new)) if same_json(new) => Verdict::Undetectable,
            _ => Verdict::Missed,
        }
    };
    if verdict == Verdict::Missed {
        violations.push(format!("{what}: verify did not notice\n{}", describe(&verify)));
    }

    for (id, copy) in &fx.states {
        let target = case.scratch().join(format!("restore-{}", &id[..8]));
        let out = case.restore(id, &target, &[]);
        if panicked(&out) {
            violations.push(format!("{what}: restore {} panicked\n{}", &id[..8], describe(&out)));
        }
        let dir = restored(&target, &fx.src);
        if out.status.success() {
            tally.restores_exact += 1;
            let diffs = if dir.is_dir() {
                tree_differences(copy, &dir, Compare::all())
            } else {
                vec!["nothing restored".to_string()]
            };
            if !diffs.is_empty() {
                violations.push(format!(
                    "{what}: restore {} exited 0 but differs:\n  {}",
                    &id[..8],
                    diffs.join("\n  ")
                ));
            }
            continue;
        }
        tally.restores_failed += 1;
        let err = stderr(&out);
        if !dir.is_dir() {
            continue;
        }
        for file in files_under(&dir) {
            let original = copy.join(file.strip_prefix(&dir).unwrap());
            let intact = original.is_file() && same_content(&original, &file);
            if !intact && !err.contains(&format!("{}:", file.display())) {
                violations.push(format!(
                    "{what}: restore {} left {} with wrong bytes and did not name it\n{}",
                    &id[..8],
                    file.display(),
                    describe(&out)
                ));
            }
        }
    }
    Some(verdict)
}

/// Every kind × mutation, `rounds` times each; fails on any broken promise.
fn harness(rounds: usize, seed: u64) {
    let started = Instant::now();
    let fx = fixture();
    eprintln!(
        "corruption: fixture with {} objects in {:.1} s; {rounds} round(s), seed {seed}",
        fx.objects.values().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tallies: BTreeMap<(Kind, Mutation), Tally> = BTreeMap::new();
    let mut violations = Vec::new();
    for round in 0..rounds {
        for kind in KINDS {
            for mutation in MUTATIONS {
                let tally = tallies.entry((kind, mutation)).or_default();
                let warm = round % 2 == 1;
                if let Some(verdict) = run_case(&fx, kind, mutation, &mut rng, warm, tally, &mut violations) {
                    *tally.verdicts.entry(verdict).or_default() += 1;
                }
            }
        }
    }
    let mut total = Tally::default();
    eprintln!("corruption: kind × mutation: tried, detected, undetectable, missed; restores exact/failed");
    for ((kind, mutation), t) in &tallies {
        let v = |verdict| t.verdicts.get(&verdict).copied().unwrap_or(0);
        eprintln!(
            "  {:<9} {:<9} {:>3} {:>3} {:>3} {:>3}; {}/{}",
            format!("{kind:?}"),
            format!("{mutation:?}"),
            t.tried,
            v(Verdict::Detected),
            v(Verdict::Undetectable),
            v(Verdict::Missed),
            t.restores_exact,
            t.restores_failed
        );
        total.tried += t.tried;
        for (verdict, n) in &t.verdicts {
            *total.verdicts.entry(*verdict).or_default() += n;
        }
        total.restores_exact += t.restores_exact;
        total.restores_failed += t.restores_failed;
    }
    let v = |verdict| total.verdicts.get(&verdict).copied().unwrap_or(0);
    eprintln!(
        "corruption: {} cases: {} detected, {} undetectable by nature, {} missed; \
         {} restores exact, {} failed; {} violations; {:.1} s",
        total.tried,
        v(Verdict::Detected),
        v(Verdict::Undetectable),
        v(Verdict::Missed),
        total.restores_exact,
        total.restores_failed,
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n\n"));
}

#[test]
fn damage_is_detected_and_never_restored_silently() {
    harness(1, torture_seed(7));
}

#[test]
#[ignore = "long: SNAP_TORTURE_N rounds over every kind and mutation (default 20)"]
fn torture_corruption() {
    harness(torture_n(20), torture_seed(now_ns() as u64));
}

/// A key file whose master key no longer unwraps with its password (one hex
/// digit changed) still parses; `verify` must still see the damage (by
/// checking key file names against the BLAKE3 of their bytes), since that
/// password no longer opens the repository.
#[test]
fn verify_notices_a_damaged_key_file() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "data\n").unwrap();
    snap.create(&[s(&src)]);
    let out = snap
        .command()
        .args(["key", "add", "--json"])
        .env("SNAP_NEW_PASSWORD", SECOND_PASSWORD)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let second = snap.repo.join("keys").join(parse_json(&out)["id"].as_str().unwrap());

    let text = fs::read_to_string(&second).unwrap();
    let mut key: Value = serde_json::from_str(&text).unwrap();
    let wrapped = key["master_key"].as_str().unwrap().to_string();
    let digit = if wrapped.starts_with('0') { "1" } else { "0" };
    let damaged = format!("{digit}{}", &wrapped[1..]);
    key["master_key"] = Value::String(damaged.clone());
    fs::write(&second, text.replace(&wrapped, &damaged)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&fs::read(&second).unwrap()).unwrap(),
        key
    );

    let mut other = Snap::new();
    other.repo = snap.repo.clone();
    other.password = Some(SECOND_PASSWORD.into());
    let opened = other.run(&["snapshots"]);
    assert_ne!(opened.status.code(), Some(0), "the damaged key still opens");

    let verify = snap.run(&["verify", "--read-data", "--json"]);
    assert_code(&verify, 1);
    let report = parse_json(&verify);
    let name = second.file_name().unwrap().to_str().unwrap();
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["severity"] == "error" && p["object"].as_str().unwrap().contains(name)),
        "no error names key file {name}: {report}"
    );
}
