//! `snap ls`: list a snapshot's entries with their full source paths
//! (the walk is `snap_core::ls`; this renders it).

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use snap_core::ls::{self, Entry, LsOptions};
use snap_core::tree::NodeKind;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that holds PATH and matches the
    /// filters), `latest~N` (the N-th before it), an id or a unique id
    /// prefix; `SNAPSHOT:PATH` is the same as giving PATH.
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

struct Lister<'a> {
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
    let (spec, subtree) = snap_core::snapshot::split_subtree(&args.snapshot);
    let path = match (subtree, &args.path) {
        (Some(_), Some(_)) => anyhow::bail!(snap_core::Error::InvalidArgument(
            "give the path to list as SNAPSHOT:PATH or as PATH, not both".into()
        )),
        (Some(subtree), None) => Some(std::path::Path::new(subtree)),
        (None, path) => path.as_deref(),
    };
    let path = path.map(snap_core::snapshot::source_path).transpose()?;
    let mut filter = args.select.filter()?;
    filter.paths.extend(path.clone());
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, spec, &filter)?;
    let options = LsOptions {
        path,
        recursive: !args.no_recursive,
    };
    let entries = ls::entries(&repo, &id, &snapshot, &options)?;
    let mut lister = Lister {
        args: &args,
        json: global.json,
        escape: std::io::stdout().is_terminal(),
        out: std::io::BufWriter::new(crate::term::Stdout::lock()),
    };
    for entry in entries {
        lister.print(&entry?)?;
    }
    lister.out.flush()?;
    Ok(crate::exit::OK)
}

impl Lister<'_> {
    fn print(&mut self, entry: &Entry) -> Result<()> {
        let (node, path) = (&entry.node, &entry.path);
        if self.json {
            writeln!(self.out, "{}", serde_json::to_string(entry)?)?;
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
            let (owner, group) = super::ls::owner_group(node);
            let mut line = format!(
                "{kind}{} {owner:<8} {group:<8} {:>12} {} ",
                mode_string(node.mode),
                node.size,
                super::local_time(&entry.mtime()),
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

/// A node's owner and group by name, or by number where none was recorded.
pub(crate) fn owner_group(node: &snap_core::tree::Node) -> (String, String) {
    let name = |name: &str, id: u32| {
        if name.is_empty() {
            id.to_string()
        } else {
            name.to_string()
        }
    };
    (name(&node.user, node.uid), name(&node.group, node.gid))
}

/// `rwxr-x---` with setuid, setgid and sticky shown as s/S and t/T.
pub(crate) fn mode_string(mode: u32) -> String {
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
