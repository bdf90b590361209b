//! The restore wizard: (1) choose snapshot, paths, target and overwrite
//! policy; (2) the restorer's dry-run plan, entry by entry with totals;
//! (3) the restore as a job with live progress, ending with the result and
//! the safety snapshot (what the restore replaced or deleted).
//!
//! Step 3 restores what step 2 showed only as far as the target has not
//! changed in between: the plan is made again when the restore runs (as
//! `snap restore` does), against the target as it is then.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use snap_core::id::SnapshotId;
use snap_core::lock::LockGuard;
use snap_core::repo::Repository;
use snap_core::restorer::{self, Action, Overwrite, RestoreOptions};

use crate::auth::Session;
use crate::html::{self, csrf_field, human_bytes, local_time, query_str, Fail, PageResult};
use crate::pages::{blocking, load_snapshot};
use crate::App;

/// Plan entries a preview lists (the totals cover all).
const PREVIEW_SHOWN: usize = 1000;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/restore", get(step1))
        .route("/restore/preview", post(step2))
        .route("/restore/run", post(step3))
        .with_state(app)
}

#[derive(Clone, Default, serde::Deserialize)]
struct Choice {
    snapshot: String,
    /// Snapshot paths, one per line; empty: the whole snapshot.
    #[serde(default)]
    paths: String,
    /// `original` or `other`.
    #[serde(default)]
    target_kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    overwrite: String,
    #[serde(default)]
    delete: Option<String>,
}

const OVERWRITE: [(&str, &str); 4] = [
    ("if-changed", "if its content changed"),
    ("always", "always"),
    ("if-newer", "if the snapshot's copy is newer"),
    ("never", "never"),
];

impl Choice {
    fn paths(&self) -> Vec<PathBuf> {
        self.paths
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    fn original(&self) -> bool {
        self.target_kind != "other"
    }

    /// The restorer's options: to the original location, the whole
    /// snapshot lands at `/` under its full paths, or the chosen paths (of
    /// one directory) land in that directory; elsewhere, each chosen path lands in the
    /// target under its own name (all of the snapshot under full paths).
    fn options(&self, dry_run: bool) -> Result<RestoreOptions, Fail> {
        let mut paths = Vec::new();
        for p in self.paths() {
            paths.push(snap_core::snapshot::source_path(&p).map_err(Fail::from)?);
        }
        let overwrite = match self.overwrite.as_str() {
            "" | "if-changed" => Overwrite::IfChanged,
            "always" => Overwrite::Always,
            "if-newer" => Overwrite::IfNewer,
            "never" => Overwrite::Never,
            other => return Err(Fail::bad(format!("unknown overwrite policy {other:?}"))),
        };
        let (target, paths, includes) = if self.original() {
            // Exact paths, never patterns: a name with `[`, `*` or `?` as an
            // include pattern would match other files. Each path lands in
            // the target under its own name, so the target is their parent.
            let paths: Vec<PathBuf> = paths.into_iter().filter(|p| p.parent().is_some()).collect();
            match paths.first().and_then(|p| p.parent()) {
                None => (PathBuf::from("/"), Vec::new(), Vec::new()),
                Some(parent) => {
                    if paths.iter().any(|p| p.parent() != Some(parent)) {
                        return Err(Fail::bad(
                            "to the original location, the paths of one restore must share a directory: \
                             restore the others one at a time",
                        ));
                    }
                    (parent.to_path_buf(), paths.clone(), Vec::new())
                }
            }
        } else {
            let target = PathBuf::from(self.target.trim());
            if !target.is_absolute() {
                return Err(Fail::bad("the target directory must be an absolute path"));
            }
            (target, paths, Vec::new())
        };
        Ok(RestoreOptions {
            target,
            paths,
            includes,
            overwrite,
            delete: self.delete.is_some(),
            dry_run,
            ..Default::default()
        })
    }

    fn hidden(&self, session: &Session) -> Markup {
        html! {
            (csrf_field(session))
            input type="hidden" name="snapshot" value=(self.snapshot);
            input type="hidden" name="paths" value=(self.paths);
            input type="hidden" name="target_kind" value=(self.target_kind);
            input type="hidden" name="target" value=(self.target);
            input type="hidden" name="overwrite" value=(self.overwrite);
            @if self.delete.is_some() { input type="hidden" name="delete" value="1"; }
        }
    }

    fn describe(&self) -> Markup {
        html! {
            dl.card {
                dt { "Snapshot" } dd.mono { (self.snapshot.get(..8).unwrap_or(&self.snapshot)) }
                dt { "Paths" } dd.path { @if self.paths().is_empty() { "everything" } @else { (self.paths.replace('\n', " ")) } }
                dt { "Target" } dd.path { @if self.original() { "the original location" } @else { (self.target) } }
                dt { "Overwrite" } dd { (OVERWRITE.iter().find(|(k, _)| *k == self.overwrite).map(|(_, d)| *d).unwrap_or(OVERWRITE[0].1)) }
                dt { "Delete extra files" } dd { @if self.delete.is_some() { "yes" } @else { "no" } }
            }
        }
    }
}

async fn step1(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let q = query.as_deref();
    let chosen = query_str(q, "snapshot");
    let path = query_str(q, "path").filter(|p| p != "/");
    let shared = app.clone();
    let all = blocking(move || Ok(shared.list_snapshots()?)).await?;
    let body = html! {
        ol.steps { li.current { "Choose" } li { "Preview" } li { "Restore" } }
        @if all.is_empty() {
            (html::empty("There is nothing to restore: this repository has no snapshots yet."))
        } @else {
            form #restore-form method="post" action="/restore/preview" {
                (csrf_field(&session))
                label for="snapshot" { "Snapshot" }
                select #snapshot name="snapshot" {
                    @for (id, s) in all.iter().rev() {
                        option value=(id.to_hex()) selected[chosen.as_deref() == Some(id.to_hex().as_str())] {
                            (id.short()) " " (local_time(&s.time)) " " (s.host) " " (s.paths.join(" "))
                        }
                    }
                }
                label for="paths" { "Paths in the snapshot (one per line; empty restores everything)" }
                textarea #paths name="paths" rows="3" { @if let Some(p) = &path { (p) } }
                fieldset {
                    legend { "Restore to" }
                    label { input type="radio" name="target_kind" value="original" checked; " the original location (replaces what is there now)" }
                    label { input #target-other type="radio" name="target_kind" value="other"; " another directory:" }
                    input #target type="text" name="target" placeholder="/tmp/restored";
                }
                label for="overwrite" { "Replace an existing entry" }
                select #overwrite name="overwrite" {
                    @for (value, label) in OVERWRITE { option value=(value) { (label) } }
                }
                label { input type="checkbox" name="delete" value="1"; " Delete what the target holds that the snapshot does not" }
                button #preview type="submit" { "Preview" }
            }
        }
    };
    Ok(html::page("Restore", "/restore", &session, body))
}

fn totals(result: &restorer::RestoreResult) -> Markup {
    html! {
        table.totals #totals {
            tbody {
                @for action in Action::ALL {
                    @let t = result.total(action);
                    @if t.count > 0 {
                        tr { th { (action.name()) } td.num { (t.count) } td.num { (human_bytes(t.bytes)) } }
                    }
                }
            }
        }
    }
}

async fn step2(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Form(choice): Form<Choice>,
) -> PageResult {
    let options = choice.options(true)?;
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let spec = choice.snapshot.clone();
    let result = blocking(move || {
        // The plan reads the snapshot's trees and blobs: a prune must not
        // remove them meanwhile (the shared lock, as the run takes).
        let _lock = repo.read_lock("ui restore preview", wait, stop)?;
        let (_, s) = load_snapshot(&repo, &spec)?;
        Ok(restorer::restore_with(
            &repo,
            &s,
            &options,
            None,
            &snap_core::progress::NoProgress,
            stop,
        )?)
    })
    .await?;
    let conflicts = result.total(Action::Conflict).count;
    let body = html! {
        ol.steps { li { "Choose" } li.current { "Preview" } li { "Restore" } }
        (choice.describe())
        h2 { "What the restore would do" }
        @if result.entries.is_empty() { (html::empty("Nothing: no entry of the snapshot matches these paths.")) }
        @else {
            (totals(&result))
            div.scroll { table #plan {
                thead { tr { th { "Action" } th { "Type" } th.num { "Size" } th { "Path" } } }
                tbody { @for e in result.entries.iter().take(PREVIEW_SHOWN) {
                    tr class=(e.action.name()) { td { (e.action.name()) } td { (e.kind) } td.num { @if e.kind == "file" { (human_bytes(e.size)) } } td.path { (e.path.display()) } }
                } }
            } }
            @if result.entries.len() > PREVIEW_SHOWN { p.note { "The first " (PREVIEW_SHOWN) " of " (result.entries.len()) " entries." } }
        }
        @for (path, message) in &result.errors { p.error { (path.display()) ": " (message) } }
        @if conflicts > 0 { p.error { (conflicts) " entries are in the way (another kind of entry at their place): they would be left alone." } }
        form method="post" action="/restore/run" {
            (choice.hidden(&session))
            button #run type="submit" { "Restore now" }
            " " a href="/restore" { "Start over" }
        }
    };
    Ok(html::page("Restore: preview", "/restore", &session, body))
}

async fn step3(State(app): State<Arc<App>>, Form(choice): Form<Choice>) -> PageResult {
    let options = choice.options(false)?;
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let summary = choice.describe();
    Ok(app
        .jobs
        .start("restore", "Restore".into(), move |job| {
            let lock = repo.read_lock("ui restore", wait, stop).map_err(|e| e.to_string())?;
            let (id, s) = load_snapshot(&repo, &choice.snapshot).map_err(|f| f.1)?;
            let take = |paths: &[PathBuf]| safety_snapshot(&repo, lock.as_ref(), paths, stop);
            let safety: Option<&restorer::Safety> = Some(&take);
            let result = restorer::restore_with(&repo, &s, &options, safety, job, stop)
                .map_err(|e| format!("cannot restore snapshot {}: {e}", id.short()))?;
            Ok(html! {
                (summary)
                p #result {
                    @if result.errors.is_empty() { span.ok { "Restored" } } @else { span.error { "Restored with errors:" } }
                    " " (result.files) " files, " (result.dirs) " directories, " (human_bytes(result.bytes)) "."
                }
                (totals(&result))
                @if let Some(safety) = &result.safety_snapshot {
                    p #safety { "Safety snapshot "
                        a.mono href=(format!("/snapshots/{}/browse", safety.to_hex())) { (safety.short()) }
                        " holds what the restore replaced or deleted." }
                } @else { p #safety { "Nothing was replaced or deleted: no safety snapshot was needed." } }
                @for (path, message) in &result.errors { p.error { (path.display()) ": " (message) } }
            })
        })?
        .into_response())
}

/// What `snap restore` takes before it replaces or deletes anything
/// (snap-core's `safety`); none without a lock (a read-only repository).
fn safety_snapshot(
    repo: &Repository,
    lock: Option<&LockGuard>,
    paths: &[PathBuf],
    stop: &std::sync::atomic::AtomicBool,
) -> snap_core::Result<SnapshotId> {
    let Some(lock) = lock else {
        return Err(snap_core::Error::SafetySnapshot {
            reason: "the repository is read-only here".into(),
        });
    };
    snap_core::safety::safety_snapshot(repo, lock, paths, 0, stop)
}
