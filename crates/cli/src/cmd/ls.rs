//! `snap ls`: list a snapshot's entries with their full source paths.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::repo::Repository;
use snap_core::tree::{self, Node, NodeKind, Tree};

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that holds PATH and matches the
    /// filters), an id or a unique id prefix.
    snapshot: String,
    /// List only this path (and what is below it), as it was on the source
    /// machine; a relative path is taken from the working directory, as `create` does.
    path: Option<PathBuf>,
    #[command(flatten)]
    select: super::SelectArgs,
    /// Show type, mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
    /// Do not descend into directories below PATH.
    #[arg(long)]
    no_recursive: bool,
}

/// One line of `snap ls --json` (newline-delimited JSON, one entry per line).
#[derive(Serialize)]
struct EntryJson {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: String,
    uid: u32,
    gid: u32,
    user: String,
    group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

struct Lister<'a> {
    repo: &'a Repository,
    args: &'a Args,
    json: bool,
    /// Names quoted as GNU ls does on a terminal (`crate::term::shell_escape`),
    /// so a newline or an escape sequence in a name can neither fake a line
    /// nor drive the terminal; raw bytes to a pipe, as ls.
    escape: bool,
    out: std::io::BufWriter<crate::term::Stdout>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let path = args.path.as_deref().map(snap_core::snapshot::source_path).transpose()?;
    let mut filter = args.select.filter()?;
    filter.paths.extend(path.clone());
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, &args.snapshot, &filter)?;
    let mut lister = Lister {
        repo: &repo,
        args: &args,
        json: global.json,
        escape: std::io::stdout().is_terminal(),
        out: std::io::BufWriter::new(crate::term::Stdout::lock()),
    };
    match &path {
        None => lister.walk(&snapshot.tree, Path::new("/"))?,
        Some(path) => {
            let components = tree::path_components(path).context("a resolved path has no '..'")?;
            let full = PathBuf::from("/").join(std::ffi::OsStr::from_bytes(&components.join(&b'/')));
            if components.is_empty() {
                lister.walk(&snapshot.tree, Path::new("/"))?;
            } else {
                let node = tree::lookup_path(&repo, &snapshot.tree, &components)?.ok_or_else(|| {
                    snap_core::Error::InvalidArgument(format!("{} is not in snapshot {}", full.display(), id.short()))
                })?;
                lister.print(&node, &full)?;
                if let Some(sub) = node.subtree {
                    lister.walk(&sub, &full)?;
                }
            }
        }
    }
    lister.out.flush()?;
    Ok(crate::exit::OK)
}

impl Lister<'_> {
    /// Prints the entries below `tree_id` depth-first, in name order. A
    /// stack on the heap, not recursion: a snapshot's depth is whatever the
    /// backed-up tree's was, and must not overflow the thread's stack.
    fn walk(&mut self, tree_id: &snap_core::id::BlobId, dir: &Path) -> Result<()> {
        // The path of the entry being printed: `dir` and one component per
        // level below the first.
        let mut path = dir.to_path_buf();
        let mut stack = vec![Tree::load(self.repo, tree_id)?.nodes.into_iter()];
        while let Some(level) = stack.last_mut() {
            let Some(node) = level.next() else {
                stack.pop();
                if !stack.is_empty() {
                    path.pop();
                }
                continue;
            };
            path.push(std::ffi::OsStr::from_bytes(&node.name));
            self.print(&node, &path)?;
            match node.subtree {
                Some(sub) if !self.args.no_recursive => stack.push(Tree::load(self.repo, &sub)?.nodes.into_iter()),
                _ => {
                    path.pop();
                }
            }
        }
        Ok(())
    }

    fn print(&mut self, node: &Node, path: &Path) -> Result<()> {
        let mtime = jiff::Timestamp::from_nanosecond(i128::from(node.mtime_ns)).unwrap_or_default();
        if self.json {
            let entry = EntryJson {
                path: path.to_string_lossy().into_owned(),
                kind: kind_name(node.kind),
                mode: node.mode,
                size: node.size,
                mtime: mtime.to_string(),
                uid: node.uid,
                gid: node.gid,
                user: node.user.clone(),
                group: node.group.clone(),
                link_target: (node.kind == NodeKind::Symlink)
                    .then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
            };
            writeln!(self.out, "{}", serde_json::to_string(&entry)?)?;
        } else if self.args.long {
            let kind = match node.kind {
                NodeKind::File => '-',
                NodeKind::Dir => 'd',
                NodeKind::Symlink => 'l',
                NodeKind::Fifo => 'p',
                NodeKind::CharDevice => 'c',
                NodeKind::BlockDevice => 'b',
                NodeKind::Socket => 's',
            };
            let owner = if node.user.is_empty() {
                node.uid.to_string()
            } else {
                node.user.clone()
            };
            let group = if node.group.is_empty() {
                node.gid.to_string()
            } else {
                node.group.clone()
            };
            let mut line = format!(
                "{kind}{} {owner:<8} {group:<8} {:>12} {} ",
                mode_string(node.mode),
                node.size,
                super::local_time(&mtime),
            )
            .into_bytes();
            self.push_name(&mut line, path.as_os_str().as_bytes());
            if node.kind == NodeKind::Symlink {
                line.extend_from_slice(b" -> ");
                self.push_name(&mut line, &node.link_target);
            }
            line.push(b'\n');
            self.out.write_all(&line)?;
        } else {
            let mut line = Vec::new();
            self.push_name(&mut line, path.as_os_str().as_bytes());
            line.push(b'\n');
            self.out.write_all(&line)?;
        }
        Ok(())
    }
}

impl Lister<'_> {
    fn push_name(&self, line: &mut Vec<u8>, name: &[u8]) {
        if self.escape {
            line.extend_from_slice(crate::term::shell_escape(name).as_bytes());
        } else {
            line.extend_from_slice(name);
        }
    }
}

/// `rwxr-x---` with setuid, setgid and sticky shown as s/S and t/T.
fn mode_string(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for (i, shift) in [6u32, 3, 0].into_iter().enumerate() {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let special = match i {
            0 => mode & 0o4000 != 0,
            1 => mode & 0o2000 != 0,
            _ => mode & 0o1000 != 0,
        };
        let exec = bits & 1 != 0;
        out.push(match (special, exec, i) {
            (true, true, 2) => 't',
            (true, false, 2) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => 'x',
            (false, false, _) => '-',
        });
    }
    out
}
