//! The packs `verify` found damaged, remembered for `repair packs`.
//!
//! `verify` may take hours (`--read-data`); `repair packs` with no packs
//! named repairs what the last verify found instead of reading everything
//! again. The list is a local file, `damaged-packs` in the repository's cache
//! directory, one pack id per line: it is a hint, not repository state
//! (verify never writes to the repository, and another machine runs its own
//! verify), and losing it only means naming the packs or using
//! `repair packs --read-data`.
//!
//! Each verify adds the packs it found damaged and removes the packs it read
//! whole; a pack it did not read keeps its entry (a `--read-data-subset`
//! run does not forget what an earlier run found). `repair packs` removes
//! the packs it repaired.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::id::PackId;
use crate::repo::Repository;

const FILE_NAME: &str = "damaged-packs";

fn path(repo: &Repository) -> PathBuf {
    repo.cache_dir().join(FILE_NAME)
}

/// The packs recorded as damaged. Unparsable lines are skipped: the file is
/// only a hint.
pub fn load(repo: &Repository) -> Result<BTreeSet<PackId>> {
    let path = path(repo);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| PackId::from_hex(line.trim()).ok())
        .collect())
}

/// Records `damaged`, forgets `whole`, and keeps the rest.
pub fn update(repo: &Repository, damaged: &BTreeSet<PackId>, whole: &BTreeSet<PackId>) -> Result<()> {
    let mut packs = load(repo)?;
    packs.retain(|p| !whole.contains(p));
    packs.extend(damaged.iter().copied());
    store(repo, &packs)
}

fn store(repo: &Repository, packs: &BTreeSet<PackId>) -> Result<()> {
    let path = path(repo);
    if packs.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        };
    }
    let text: String = packs.iter().map(|p| format!("{}\n", p.to_hex())).collect();
    // Written aside and renamed, so a reader never sees half a list.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}
