//! `catalog export`: every entry of every snapshot (or of the ones asked
//! for) in an SQLite database that can be queried offline: where is this
//! file, which snapshots hold which version of it, what changed when. The
//! schema is documented in docs/catalog.md; [`SCHEMA_VERSION`] is stored in
//! `PRAGMA user_version`.
//!
//! A file's `content` is the BLAKE3 hash of its blob ids in order: equal for
//! equal content (within one repository: blob ids are keyed), so
//! `GROUP BY content` finds the versions of a file. Trees shared between
//! snapshots are read once (an unchanged directory has the same tree id).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::params;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, Tree};

/// Bumped when the schema changes incompatibly.
pub const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    paths TEXT NOT NULL,
    tags TEXT NOT NULL,
    tree TEXT NOT NULL
);
CREATE TABLE files (
    snapshot TEXT NOT NULL REFERENCES snapshots(id),
    path TEXT NOT NULL,
    type TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    user TEXT NOT NULL,
    \"group\" TEXT NOT NULL,
    content TEXT,
    link_target TEXT
);
";

const INDEXES: &str = "
CREATE INDEX files_path ON files(path);
CREATE INDEX files_content ON files(content);
CREATE INDEX files_snapshot ON files(snapshot, path);
CREATE INDEX snapshots_time ON snapshots(time);
";

/// What a catalog export wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct CatalogResult {
    pub snapshots: u64,
    pub files: u64,
}

/// The `content` column: BLAKE3 over the file's blob ids.
pub fn content_id(content: &[BlobId]) -> String {
    let mut hasher = blake3::Hasher::new();
    for id in content {
        hasher.update(&id.0);
    }
    hasher.finalize().to_hex().to_string()
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Io {
        path: "catalog database".into(),
        error: std::io::Error::other(e),
    }
}

/// Writes the catalog of `snapshots` into a new SQLite database at
/// `output` (replaced atomically: a temporary file beside it is renamed
/// into place when complete).
pub fn export(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    output: &Path,
    cancel: &AtomicBool,
) -> Result<CatalogResult> {
    crate::export::write_file_atomically(output, |_, path| {
        // SQLite opens by path; the temporary file is empty and ours.
        let db = rusqlite::Connection::open(path).map_err(sql)?;
        let result = fill(repo, snapshots, &db, cancel)?;
        db.close().map_err(|(_, e)| sql(e))?;
        Ok(result)
    })
}

fn fill(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    db: &rusqlite::Connection,
    cancel: &AtomicBool,
) -> Result<CatalogResult> {
    db.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(sql)?;
    db.execute_batch(SCHEMA).map_err(sql)?;
    db.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
    let mut result = CatalogResult::default();
    // Trees read already: snapshots share most of theirs. Bounded by the
    // distinct directories of the chosen snapshots.
    let mut trees: HashMap<BlobId, std::rc::Rc<Tree>> = HashMap::new();
    db.execute_batch("BEGIN").map_err(sql)?;
    {
        let mut insert_snapshot = db
            .prepare("INSERT INTO snapshots (id, time, host, username, paths, tags, tree) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .map_err(sql)?;
        let mut insert_file = db
            .prepare(
                "INSERT INTO files (snapshot, path, type, size, mtime, mode, uid, gid, user, \"group\", content, link_target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(sql)?;
        for (id, snapshot) in snapshots {
            let hex = id.to_hex();
            insert_snapshot
                .execute(params![
                    hex,
                    snapshot.time.to_string(),
                    snapshot.host,
                    snapshot.username,
                    serde_json::to_string(&snapshot.paths).expect("strings encode"),
                    serde_json::to_string(&snapshot.tags).expect("strings encode"),
                    snapshot.tree.to_hex(),
                ])
                .map_err(sql)?;
            result.snapshots += 1;
            // A stack, not recursion: a snapshot's depth is its source's.
            let mut stack = vec![(String::new(), snapshot.tree)];
            while let Some((dir, tree_id)) = stack.pop() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                let tree = match trees.get(&tree_id) {
                    Some(t) => t.clone(),
                    None => {
                        let t = std::rc::Rc::new(Tree::load(repo, &tree_id)?);
                        trees.insert(tree_id, t.clone());
                        t
                    }
                };
                for node in &tree.nodes {
                    let path = format!("{dir}/{}", node.name_lossy());
                    insert_row(&mut insert_file, &hex, &path, node)?;
                    result.files += 1;
                    if let Some(sub) = node.subtree {
                        stack.push((path, sub));
                    }
                }
            }
        }
    }
    db.execute_batch("COMMIT").map_err(sql)?;
    db.execute_batch(INDEXES).map_err(sql)?;
    Ok(result)
}

fn insert_row(stmt: &mut rusqlite::Statement<'_>, snapshot: &str, path: &str, node: &Node) -> Result<()> {
    let is_file = node.kind == crate::tree::NodeKind::File;
    stmt.execute(params![
        snapshot,
        path,
        crate::ls::kind_name(node.kind),
        i64::try_from(node.size).unwrap_or(i64::MAX),
        node.mtime_ns,
        node.mode,
        node.uid,
        node.gid,
        node.user,
        node.group,
        is_file.then(|| content_id(&node.content)),
        (node.kind == crate::tree::NodeKind::Symlink).then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
    ])
    .map_err(sql)?;
    Ok(())
}
