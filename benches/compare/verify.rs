//! Checking that a restored tree is the source tree: the same names, types,
//! sizes and bytes (and symlink targets).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

/// Reported differences stop after this many.
const MAX_ERRORS: usize = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Files, directories and bytes under `root` (not counting `root` itself).
pub fn stats(root: &Path) -> io::Result<TreeStats> {
    let mut total = TreeStats::default();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let sub = stats(&entry.path())?;
            total.files += sub.files;
            total.dirs += sub.dirs + 1;
            total.bytes += sub.bytes;
        } else {
            total.files += 1;
            total.bytes += meta.len();
        }
    }
    Ok(total)
}

/// Compares `actual` (a restore) with `expected` (its source). On a
/// difference, the error lists the first ones found.
pub fn compare(expected: &Path, actual: &Path) -> Result<TreeStats, String> {
    let mut stats = TreeStats::default();
    let mut errors = Vec::new();
    if let Err(e) = walk(expected, actual, Path::new(""), &mut stats, &mut errors) {
        errors.push(format!("I/O error: {e}"));
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(errors.join("; "))
    }
}

fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect()
}

fn walk(expected: &Path, actual: &Path, rel: &Path, stats: &mut TreeStats, errors: &mut Vec<String>) -> io::Result<()> {
    let want = names(expected)?;
    let got = match names(actual) {
        Ok(got) => got,
        Err(e) => {
            errors.push(format!("{}: cannot list the restored directory: {e}", actual.display()));
            return Ok(());
        }
    };
    for name in want.symmetric_difference(&got) {
        let what = if want.contains(name) { "missing" } else { "unexpected" };
        errors.push(format!("{what}: {}", rel.join(name).display()));
    }
    for name in want.intersection(&got) {
        if errors.len() >= MAX_ERRORS {
            return Ok(());
        }
        let (e, a, r) = (expected.join(name), actual.join(name), rel.join(name));
        let (em, am) = (fs::symlink_metadata(&e)?, fs::symlink_metadata(&a)?);
        if em.file_type() != am.file_type() {
            errors.push(format!("{}: type differs", r.display()));
        } else if em.is_dir() {
            stats.dirs += 1;
            walk(&e, &a, &r, stats, errors)?;
        } else if em.is_symlink() {
            if fs::read_link(&e)? != fs::read_link(&a)? {
                errors.push(format!("{}: symlink target differs", r.display()));
            }
        } else if em.len() != am.len() {
            errors.push(format!("{}: size {} instead of {}", r.display(), am.len(), em.len()));
        } else {
            stats.files += 1;
            stats.bytes += em.len();
            if let Some(at) = first_difference(&e, &a)? {
                errors.push(format!("{}: content differs at byte {at}", r.display()));
            }
        }
    }
    Ok(())
}

fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    const BUF: usize = 1 << 20;
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0; BUF], vec![0; BUF]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if ba[..na] != bb[..nb] {
            let at = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Ok(Some(offset + at as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
