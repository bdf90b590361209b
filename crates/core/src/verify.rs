//! `verify`: proves the repository is whole, or says precisely what is not.
//!
//! Structure (always): key files and index files decode; every indexed pack
//! exists with the indexed size and a header that agrees with the index;
//! every snapshot decodes; every tree reachable from a snapshot decodes; every
//! blob a tree references is indexed. With `read_data`, the chosen packs are
//! read whole: the name must be the BLAKE3 of the bytes, and every blob must
//! open and match its id.
//!
//! When something is wrong, a second pass finds which snapshots and paths use
//! the damaged objects. Verify never writes to the repository.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKind;
use crate::damaged;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, KeyId, PackId, SnapshotId};
use crate::index::IndexFile;
use crate::keys::KeyFile;
use crate::pack::{self, BlobKind, PackEntry};
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{self, NodeKind, Tree};

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    All,
    /// Part `n` of `m` (1-based): packs whose id falls in that bucket, so `m`
    /// runs with n = 1..m cover every pack.
    Part {
        n: u32,
        m: u32,
    },
    /// A random share of the packs, in percent.
    Percent(f64),
    /// Random packs up to this many bytes.
    Bytes(u64),
}

impl std::str::FromStr for DataSubset {
    type Err = String;

    /// `n/m`, `10%` or a size such as `2GiB`, `500M`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.parse().map_err(|_| format!("'{s}': expected n/m"))?;
            let m: u32 = m.parse().map_err(|_| format!("'{s}': expected n/m"))?;
            if n == 0 || m == 0 || n > m {
                return Err(format!("'{s}': need 1 <= n <= m"));
            }
            return Ok(DataSubset::Part { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("'{s}': expected a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("'{s}': the percentage must be in (0, 100]"));
            }
            return Ok(DataSubset::Percent(p));
        }
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits_end);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("'{s}': expected n/m, a percentage or a size"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => return Err(format!("'{s}': unknown unit '{other}'")),
        };
        Ok(DataSubset::Bytes(number.saturating_mul(factor)))
    }
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub read_data: Option<DataSubset>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The repository is damaged: something stored cannot be read back.
    Error,
    /// Worth knowing, nothing lost (data no index or snapshot uses).
    Notice,
}

/// A snapshot path that uses a damaged object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub path: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The damaged object, e.g. `pack 5e1f09c2...`.
    pub object: String,
    pub message: String,
    /// Snapshots and paths that need the object (errors only).
    pub affects: Vec<Affected>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyStats {
    pub snapshots: u64,
    pub index_files: u64,
    pub packs: u64,
    pub trees: u64,
    pub blob_references: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    pub stats: VerifyStats,
    /// Indexed packs found damaged (missing, of the wrong size, with a bad
    /// header or damaged blobs): what `snap repair packs` salvages and
    /// removes. Recorded for it in [`crate::damaged`].
    pub damaged_packs: Vec<PackId>,
}

impl VerifyReport {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// What the index says of one pack; entries are kept as a digest so memory
/// grows with the number of packs, not blobs.
struct IndexedPackInfo {
    size: u64,
    entries_digest: [u8; 32],
    index_file: IndexId,
}

fn entries_digest(entries: &[PackEntry]) -> [u8; 32] {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.offset);
    *blake3::hash(&postcard::to_allocvec(&sorted).expect("entries encode")).as_bytes()
}

/// Objects found damaged or missing by the first pass.
#[derive(Default)]
struct Damage {
    blobs: HashSet<BlobId>,
    packs: HashSet<PackId>,
    trees: HashSet<BlobId>,
}

impl Damage {
    fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.packs.is_empty() && self.trees.is_empty()
    }
}

struct Verifier<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    problems: Mutex<Vec<Problem>>,
    /// Problem index per damaged object, to attach `affects` later.
    damage: Mutex<Damage>,
    object_problem: Mutex<HashMap<String, usize>>,
    /// Indexed packs found damaged, for `repair packs`.
    damaged_packs: Mutex<BTreeSet<PackId>>,
    /// Packs read whole and found intact.
    whole_packs: Mutex<BTreeSet<PackId>>,
}

pub fn verify(
    repo: &Repository,
    options: &VerifyOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VerifyReport> {
    // The repository's own copies are what is checked, not the local cache's.
    let repo = &repo.without_cache();
    let v = Verifier {
        repo,
        progress,
        cancel,
        problems: Mutex::new(Vec::new()),
        damage: Mutex::new(Damage::default()),
        object_problem: Mutex::new(HashMap::new()),
        damaged_packs: Mutex::new(BTreeSet::new()),
        whole_packs: Mutex::new(BTreeSet::new()),
    };
    let mut stats = VerifyStats::default();
    v.check_keys()?;
    let indexed = v.check_index_files(&mut stats)?;
    v.check_packs(&indexed, options.read_data, &mut stats)?;
    let snapshots = v.check_snapshots(&mut stats)?;
    v.check_trees(&snapshots, &mut stats)?;
    v.find_affected(&snapshots)?;
    let mut problems = v.problems.into_inner().expect("problems lock");
    for p in &mut problems {
        p.affects
            .sort_by(|a, b| (&a.snapshot, &a.path).cmp(&(&b.snapshot, &b.path)));
        p.affects.dedup();
    }
    let damaged_packs = v.damaged_packs.into_inner().expect("damage lock");
    let whole_packs = v.whole_packs.into_inner().expect("damage lock");
    // A local hint for `repair packs`; failing to write it loses nothing the
    // report does not say, so it does not fail the verify.
    if let Err(e) = damaged::update(repo, &damaged_packs, &whole_packs) {
        tracing::warn!("cannot record the damaged packs for `snap repair packs`: {e}");
    }
    Ok(VerifyReport {
        problems,
        stats,
        damaged_packs: damaged_packs.into_iter().collect(),
    })
}

impl Verifier<'_> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    fn report(&self, severity: Severity, object: String, message: String) {
        let mut problems = self.problems.lock().expect("problems lock");
        let mut by_object = self.object_problem.lock().expect("problems lock");
        // Each problem once: a second finding on the same object adds nothing.
        if by_object.contains_key(&object) {
            return;
        }
        by_object.insert(object.clone(), problems.len());
        problems.push(Problem {
            severity,
            object,
            message,
            affects: Vec::new(),
        });
    }

    fn check_keys(&self) -> Result<()> {
        for info in self.repo.backend().list(ObjectKind::Key)? {
            let result = self
                .repo
                .backend()
                .read(ObjectKind::Key, &info.name)
                .map_err(Error::from)
                .and_then(|bytes| {
                    if KeyId::hash_of(&bytes).to_hex() != info.name {
                        return Err(Error::corrupt(
                            format!("key file {}", info.name),
                            "its content does not match its name",
                        ));
                    }
                    let file = KeyFile::from_bytes(&bytes, &info.name)?;
                    self.repo.config().check_key_kdf(file.is_encrypted(), &info.name)
                });
            if let Err(e) = result {
                self.report(Severity::Error, format!("key file {}", info.name), why(&e));
            }
        }
        Ok(())
    }

    fn check_index_files(&self, stats: &mut VerifyStats) -> Result<HashMap<PackId, IndexedPackInfo>> {
        let listed = self.repo.backend().list(ObjectKind::Index)?;
        let decoded: Vec<(String, Result<(IndexId, IndexFile)>)> = listed
            .par_iter()
            .map(|info| {
                let result = IndexId::from_hex(&info.name)
                    .map_err(|e| Error::corrupt(format!("index file {}", info.name), e))
                    .and_then(|id| {
                        let bytes = self.repo.backend().read(ObjectKind::Index, &info.name)?;
                        Ok((id, IndexFile::decode(self.repo.crypto(), &id, &bytes)?))
                    });
                (info.name.clone(), result)
            })
            .collect();
        let mut packs: HashMap<PackId, IndexedPackInfo> = HashMap::new();
        for (name, result) in decoded {
            stats.index_files += 1;
            let (id, file) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    self.report(
                        Severity::Error,
                        format!("index file {name}"),
                        format!("{}; `snap repair index` rebuilds the index from the packs", why(&e)),
                    );
                    continue;
                }
            };
            for p in &file.packs {
                let digest = entries_digest(&p.blobs);
                if let Some(previous) = packs.get(&p.id) {
                    if previous.entries_digest != digest || previous.size != p.size {
                        self.report(
                            Severity::Error,
                            format!("pack {}", p.id),
                            format!(
                                "index files {} and {id} disagree about its content",
                                previous.index_file
                            ),
                        );
                    }
                    continue;
                }
                packs.insert(
                    p.id,
                    IndexedPackInfo {
                        size: p.size,
                        entries_digest: digest,
                        index_file: id,
                    },
                );
            }
        }
        Ok(packs)
    }

    fn pack_damaged(&self, pack: &PackId, message: String) {
        self.damage.lock().expect("damage lock").packs.insert(*pack);
        self.damaged_packs.lock().expect("damage lock").insert(*pack);
        self.report(Severity::Error, format!("pack {pack}"), message);
    }

    fn check_packs(
        &self,
        indexed: &HashMap<PackId, IndexedPackInfo>,
        read_data: Option<DataSubset>,
        stats: &mut VerifyStats,
    ) -> Result<()> {
        let stored: HashMap<String, u64> = self
            .repo
            .backend()
            .list(ObjectKind::Pack)?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        for (name, size) in &stored {
            let known = PackId::from_hex(name)
                .map(|id| indexed.contains_key(&id))
                .unwrap_or(false);
            if !known {
                self.report(
                    Severity::Notice,
                    format!("pack {name}"),
                    format!("{size} bytes that no index lists (left by an interrupted backup; `snap prune` removes it, `snap repair index` adds it)"),
                );
            }
        }
        let mut present: Vec<(PackId, u64)> = Vec::new();
        for (id, info) in indexed {
            stats.packs += 1;
            match stored.get(&id.to_hex()) {
                None => self.pack_damaged(id, format!("missing (listed in index file {})", info.index_file)),
                Some(&size) if size != info.size => {
                    self.pack_damaged(id, format!("is {size} bytes, the index says {}", info.size))
                }
                Some(_) => present.push((*id, info.size)),
            }
        }
        present.sort();
        let to_read = select_packs(&present, read_data);
        let total: u64 = to_read.iter().map(|(_, size)| size).sum();
        self.progress.event(Event::Total {
            bytes: total,
            items: to_read.len() as u64,
        });
        let read_set: HashSet<PackId> = to_read.iter().map(|(id, _)| *id).collect();
        let packs_read = AtomicU64::new(0);
        let bytes_read = AtomicU64::new(0);
        present.par_iter().try_for_each(|(id, size)| -> Result<()> {
            self.check_cancel()?;
            let info = &indexed[id];
            if read_set.contains(id) {
                self.read_pack(id, *size, info)?;
                packs_read.fetch_add(1, Ordering::Relaxed);
                bytes_read.fetch_add(*size, Ordering::Relaxed);
                self.progress.event(Event::Bytes(*size));
            } else {
                match pack::read_header(self.repo.backend(), self.repo.crypto(), id, *size) {
                    Ok(header) if entries_digest(&header.entries) == info.entries_digest => {}
                    Ok(_) => self.pack_damaged(id, "its header disagrees with the index".into()),
                    Err(e) => self.pack_damaged(id, why(&e)),
                }
            }
            Ok(())
        })?;
        stats.packs_read = packs_read.into_inner();
        stats.bytes_read = bytes_read.into_inner();
        Ok(())
    }

    fn read_pack(&self, id: &PackId, size: u64, info: &IndexedPackInfo) -> Result<()> {
        let bytes = match self.repo.backend().read(ObjectKind::Pack, &id.to_hex()) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.pack_damaged(id, e.to_string());
                return Ok(());
            }
        };
        if bytes.len() as u64 != size {
            self.pack_damaged(id, format!("read {} bytes, the index says {size}", bytes.len()));
            return Ok(());
        }
        let hash_ok = PackId::hash_of(&bytes) == *id;
        let header = match pack::decode_header(self.repo.crypto(), id, &bytes, size) {
            Ok(header) => header,
            Err(e) => {
                self.pack_damaged(id, why(&e));
                return Ok(());
            }
        };
        if entries_digest(&header.entries) != info.entries_digest {
            self.pack_damaged(id, "its header disagrees with the index".into());
        }
        let mut bad_blobs = 0;
        let mut bytes = bytes;
        let mut scratch = Vec::new();
        self.repo
            .decode_pack_blobs(id, 0, &mut bytes, &header.entries, &mut scratch, |entry, result| {
                if let Err(e) = result {
                    bad_blobs += 1;
                    self.damage.lock().expect("damage lock").blobs.insert(entry.id);
                    self.report(Severity::Error, format!("blob {}", entry.id), why(&e));
                }
            });
        if bad_blobs > 0 || !hash_ok {
            self.damaged_packs.lock().expect("damage lock").insert(*id);
        } else if entries_digest(&header.entries) == info.entries_digest {
            self.whole_packs.lock().expect("damage lock").insert(*id);
        }
        if !hash_ok && bad_blobs == 0 {
            // Every blob opened, so the change is outside them (padding, header).
            self.pack_damaged(
                id,
                "its content does not match its name (BLAKE3), though every blob reads".into(),
            );
        } else if !hash_ok {
            self.report(
                Severity::Error,
                format!("pack {id}"),
                format!(
                    "its content does not match its name (BLAKE3); {bad_blobs} {} damaged",
                    if bad_blobs == 1 { "blob is" } else { "blobs are" }
                ),
            );
        }
        Ok(())
    }

    fn check_snapshots(&self, stats: &mut VerifyStats) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut out = Vec::new();
        for info in self.repo.backend().list(ObjectKind::Snapshot)? {
            stats.snapshots += 1;
            let loaded = SnapshotId::from_hex(&info.name)
                .map_err(|e| Error::corrupt(format!("snapshot {}", info.name), e))
                .and_then(|id| Ok((id, Snapshot::load(self.repo, &id)?)));
            match loaded {
                Ok(ok) => out.push(ok),
                Err(e) => self.report(Severity::Error, format!("snapshot {}", info.name), why(&e)),
            }
        }
        Ok(out)
    }

    fn check_trees(&self, snapshots: &[(SnapshotId, Snapshot)], stats: &mut VerifyStats) -> Result<()> {
        let roots: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
        let index = self.repo.index()?.reader()?;
        let mut trees = 0u64;
        let mut references = 0u64;
        tree::walk_trees(
            self.repo,
            &roots,
            &mut |_, tree, _| {
                self.check_cancel()?;
                trees += 1;
                for node in &tree.nodes {
                    for blob in &node.content {
                        references += 1;
                        match index.lookup(blob)? {
                            Some(location) if location.entry.kind == BlobKind::Data => {}
                            Some(_) => {
                                self.damage.lock().expect("damage lock").blobs.insert(*blob);
                                self.report(
                                    Severity::Error,
                                    format!("blob {blob}"),
                                    "is a tree, used as file content".into(),
                                );
                            }
                            None => {
                                self.damage.lock().expect("damage lock").blobs.insert(*blob);
                                self.report(Severity::Error, format!("blob {blob}"), "is not in any index".into());
                            }
                        }
                    }
                }
                Ok(())
            },
            &mut |id, _, e| {
                self.damage.lock().expect("damage lock").trees.insert(*id);
                self.report(Severity::Error, format!("tree {id}"), why(&e));
                Ok(())
            },
        )?;
        stats.trees = trees;
        stats.blob_references = references;
        Ok(())
    }

    /// Second pass: which snapshot paths use a damaged object.
    fn find_affected(&self, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
        let damage = std::mem::take(&mut *self.damage.lock().expect("damage lock"));
        if damage.is_empty() {
            return Ok(());
        }
        let index = self.repo.index()?.reader()?;
        // Whether a blob is damaged, by its own problem's object name.
        let blob_problem = |blob: &BlobId| -> Result<Option<String>> {
            if damage.blobs.contains(blob) {
                return Ok(Some(format!("blob {blob}")));
            }
            Ok(match index.lookup(blob)? {
                Some(location) if damage.packs.contains(&location.pack) => Some(format!("pack {}", location.pack)),
                _ => None,
            })
        };
        // Memo: trees known to reference nothing damaged are not walked again.
        let mut clean_trees: HashSet<BlobId> = HashSet::new();
        for (snapshot_id, snapshot) in snapshots {
            let mut hits: Vec<(String, PathBuf)> = Vec::new();
            self.affected_in_tree(
                &snapshot.tree,
                Path::new("/"),
                &damage,
                &blob_problem,
                &mut clean_trees,
                &mut hits,
            )?;
            let problems_index = self.object_problem.lock().expect("problems lock").clone();
            let mut problems = self.problems.lock().expect("problems lock");
            for (object, path) in hits {
                if let Some(&i) = problems_index.get(&object) {
                    problems[i].affects.push(Affected {
                        snapshot: snapshot_id.to_hex(),
                        path: path.to_string_lossy().into_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds (problem object, path) for every damaged use below `tree_id`.
    /// Returns whether anything was found. Walks with a stack on the heap:
    /// a snapshot's depth is the backed-up tree's, which anyone who could
    /// `mkdir` there chose.
    fn affected_in_tree(
        &self,
        tree_id: &BlobId,
        path: &Path,
        damage: &Damage,
        blob_problem: &dyn Fn(&BlobId) -> Result<Option<String>>,
        clean: &mut HashSet<BlobId>,
        hits: &mut Vec<(String, PathBuf)>,
    ) -> Result<bool> {
        /// A tree being walked: its id, its entries left, whether a damaged use was found in it.
        struct Level {
            id: BlobId,
            nodes: std::vec::IntoIter<crate::tree::Node>,
            found: bool,
        }
        let mut path = path.to_path_buf();
        let mut stack = match self.enter_tree(tree_id, &path, damage, blob_problem, clean, hits)? {
            Err(found) => return Ok(found),
            Ok(tree) => vec![Level {
                id: *tree_id,
                nodes: tree.nodes.into_iter(),
                found: false,
            }],
        };
        while let Some(level) = stack.last_mut() {
            let Some(node) = level.nodes.next() else {
                let done = stack.pop().expect("the stack is not empty in the loop");
                if !done.found {
                    clean.insert(done.id);
                }
                match stack.last_mut() {
                    Some(parent) => {
                        parent.found |= done.found;
                        path.pop();
                    }
                    None => return Ok(done.found),
                }
                continue;
            };
            path.push(std::ffi::OsStr::from_bytes(&node.name));
            if node.kind == NodeKind::Dir {
                if let Some(sub) = &node.subtree {
                    match self.enter_tree(sub, &path, damage, blob_problem, clean, hits)? {
                        Err(found) => level.found |= found,
                        Ok(tree) => {
                            stack.push(Level {
                                id: *sub,
                                nodes: tree.nodes.into_iter(),
                                found: false,
                            });
                            // The path stays pushed while its tree is walked.
                            continue;
                        }
                    }
                }
                path.pop();
                continue;
            }
            for blob in &node.content {
                if let Some(object) = blob_problem(blob)? {
                    hits.push((object, path.clone()));
                    level.found = true;
                }
            }
            path.pop();
        }
        Ok(false)
    }

    /// The start of [`Self::affected_in_tree`] for one tree: `Err(found)`
    /// when the tree needs no walk (known clean, damaged itself, or
    /// unreadable), else the loaded tree.
    fn enter_tree(
        &self,
        tree_id: &BlobId,
        path: &Path,
        damage: &Damage,
        blob_problem: &dyn Fn(&BlobId) -> Result<Option<String>>,
        clean: &HashSet<BlobId>,
        hits: &mut Vec<(String, PathBuf)>,
    ) -> Result<std::result::Result<Tree, bool>> {
        if clean.contains(tree_id) {
            return Ok(Err(false));
        }
        if damage.trees.contains(tree_id) {
            hits.push((format!("tree {tree_id}"), path.to_path_buf()));
            if let Some(object) = blob_problem(tree_id)? {
                hits.push((object, path.to_path_buf()));
            }
            return Ok(Err(true));
        }
        if let Some(object) = blob_problem(tree_id)? {
            hits.push((object, path.to_path_buf()));
            return Ok(Err(true));
        }
        Ok(Tree::load(self.repo, tree_id).map_err(|_| false))
    }
}

/// What is wrong, without repeating which object (the problem names it).
fn why(e: &Error) -> String {
    match e {
        Error::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// The packs `--read-data` reads.
fn select_packs(present: &[(PackId, u64)], subset: Option<DataSubset>) -> Vec<(PackId, u64)> {
    let Some(subset) = subset else {
        return Vec::new();
    };
    match subset {
        DataSubset::All => present.to_vec(),
        DataSubset::Part { n, m } => present
            .iter()
            .filter(|(id, _)| u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes")) % m == n - 1)
            .copied()
            .collect(),
        DataSubset::Percent(p) => {
            let mut shuffled = shuffled(present);
            let count = ((present.len() as f64) * p / 100.0).ceil() as usize;
            shuffled.truncate(count.min(present.len()));
            shuffled
        }
        DataSubset::Bytes(limit) => {
            let mut total = 0;
            shuffled(present)
                .into_iter()
                .take_while(|(_, size)| {
                    let take = total < limit;
                    total += size;
                    take
                })
                .collect()
        }
    }
}

/// A random order: sorted by a keyed hash of the pack id under a fresh key.
fn shuffled(present: &[(PackId, u64)]) -> Vec<(PackId, u64)> {
    let mut key = [0u8; 32];
    crate::crypto::fill_random(&mut key);
    let mut out = present.to_vec();
    out.sort_by_cached_key(|(id, _)| *blake3::keyed_hash(&key, &id.0).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subsets() {
        assert_eq!("2/5".parse::<DataSubset>().unwrap(), DataSubset::Part { n: 2, m: 5 });
        assert_eq!("10%".parse::<DataSubset>().unwrap(), DataSubset::Percent(10.0));
        assert_eq!("2GiB".parse::<DataSubset>().unwrap(), DataSubset::Bytes(2 << 30));
        assert_eq!("500M".parse::<DataSubset>().unwrap(), DataSubset::Bytes(500 << 20));
        for bad in ["0/5", "6/5", "0%", "101%", "abc", "5XB"] {
            assert!(bad.parse::<DataSubset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parts_cover_every_pack_once() {
        let present: Vec<(PackId, u64)> = (0..200u32)
            .map(|i| (PackId(*blake3::hash(&i.to_le_bytes()).as_bytes()), 1))
            .collect();
        let mut seen = HashSet::new();
        for n in 1..=5 {
            for (id, _) in select_packs(&present, Some(DataSubset::Part { n, m: 5 })) {
                assert!(seen.insert(id));
            }
        }
        assert_eq!(seen.len(), present.len());
        assert_eq!(select_packs(&present, Some(DataSubset::Percent(10.0))).len(), 20);
        assert_eq!(select_packs(&present, Some(DataSubset::Bytes(7))).len(), 7);
        assert!(select_packs(&present, None).is_empty());
    }
}
