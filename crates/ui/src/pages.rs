//! The reading pages and their few actions: dashboard (with "back up now"
//! and the repository's state), snapshots table (with forget), browse
//! (one tree per page), file details and download, directory archives,
//! diff, verify, schedules. Each handler parses, calls snap-core on a
//! blocking thread, and renders; nothing here touches storage directly.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use snap_core::id::SnapshotId;
use snap_core::repo::Repository;
use snap_core::snapshot::Snapshot;
use snap_core::tree::{self, Node, NodeKind, Tree};

use crate::auth::Session;
use crate::html::{self, csrf_field, enc, human_bytes, local_time, query_bytes, query_str, Fail, PageResult};
use crate::App;

/// Rows of the snapshots table per page.
const SNAPSHOTS_PER_PAGE: usize = 50;
/// Entries of a directory per page.
const ENTRIES_PER_PAGE: usize = 500;
/// Changes a diff page lists (the counts cover all).
const DIFF_SHOWN: usize = 2000;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/snapshots", get(snapshots))
        .route("/snapshots/{id}/browse", get(browse))
        .route("/snapshots/{id}/file", get(file_details))
        .route("/snapshots/{id}/download", get(download))
        .route("/snapshots/{id}/archive", get(archive))
        .route("/forget", get(forget_preview).post(forget_run))
        .route("/backup", post(backup))
        .route("/diff", get(diff))
        .route("/verify", get(verify_page).post(verify_run))
        .route("/schedules", get(crate::schedules::page).post(crate::schedules::save))
        .with_state(app)
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Fail> + Send + 'static) -> Result<T, Fail> {
    tokio::task::spawn_blocking(f).await?
}

async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], html::APP_JS).into_response()
}

async fn style_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], html::STYLE_CSS).into_response()
}

/// A snapshot by full id (one read), else by `latest` or a unique prefix.
pub fn load_snapshot(repo: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot), Fail> {
    if spec.len() == 64 {
        if let Ok(id) = SnapshotId::from_hex(spec) {
            return match Snapshot::load(repo, &id) {
                Ok(s) => Ok((id, s)),
                Err(snap_core::Error::Backend(e)) if e.is_not_found() => {
                    Err(Fail::not_found(format!("no snapshot {spec}")))
                }
                Err(e) => Err(e.into()),
            };
        }
    }
    Ok(snap_core::snapshot::find(repo, spec)?)
}

/// A path of the snapshot from the query's raw bytes, normalized: absolute, no `..`.
fn snapshot_path(raw: Option<Vec<u8>>) -> Result<(PathBuf, Vec<Vec<u8>>), Fail> {
    let raw = raw.unwrap_or_else(|| b"/".to_vec());
    let path = PathBuf::from(OsStr::from_bytes(&raw));
    let components = tree::path_components(&path).ok_or_else(|| Fail::bad("a path may not contain `..`"))?;
    let mut normalized = PathBuf::from("/");
    for c in &components {
        normalized.push(OsStr::from_bytes(c));
    }
    Ok((normalized, components))
}

fn summary_cells(s: &Snapshot) -> (String, String, String) {
    let sum = &s.summary;
    if !sum.is_known() {
        return ("-".into(), "-".into(), "-".into());
    }
    (
        sum.files().to_string(),
        human_bytes(sum.bytes_total),
        human_bytes(sum.bytes_added_stored),
    )
}

async fn dashboard(State(app): State<Arc<App>>, Extension(session): Extension<Session>) -> PageResult {
    let shared = app.clone();
    let (location, all) = blocking(move || Ok((shared.repo.location(), shared.list_snapshots()?))).await?;
    let last = all.iter().rev().find(|(_, s)| !s.is_checkpoint());
    let profiles = crate::schedules::load(&app).await;
    let body = html! {
        section.card {
            h2 { "Repository" }
            dl {
                dt { "Location" } dd.path { (location) }
                dt { "Snapshots" } dd { (all.len()) }
            }
        }
        section.card {
            h2 { "Last backup" }
            @match last {
                None => { (html::empty("No backups yet: back up a directory below.")) }
                Some((id, s)) => {
                    @let (files, size, added) = summary_cells(s);
                    dl {
                        dt { "Time" } dd { (local_time(&s.time)) }
                        dt { "Result" } dd {
                            @if s.summary.errors == 0 { span.ok { "complete" } }
                            @else { span.error { (s.summary.errors) " entries could not be read" } }
                        }
                        dt { "Snapshot" } dd { a href=(format!("/snapshots/{}/browse", id.to_hex())) { (id.short()) } }
                        dt { "Paths" } dd.path { (s.paths.join(" ")) }
                        dt { "Files" } dd { (files) }
                        dt { "Size" } dd { (size) " (" (added) " added)" }
                    }
                }
            }
        }
        section.card {
            h2 { "Back up now" }
            form method="post" action="/backup" {
                (csrf_field(&session))
                label for="paths" { "Paths to back up (absolute, one per line)" }
                textarea #paths name="paths" rows="3" required placeholder="/home/me/documents" {
                    @if let Some((_, s)) = last { (s.paths.join("\n")) }
                }
                label for="tags" { "Tags (comma-separated, optional)" }
                input #tags type="text" name="tags";
                button type="submit" { "Back up now" }
            }
        }
        (crate::schedules::dashboard_card(&profiles))
    };
    Ok(html::page("Dashboard", "/", &session, body))
}

#[derive(serde::Deserialize)]
struct BackupForm {
    paths: String,
    #[serde(default)]
    tags: String,
}

async fn backup(State(app): State<Arc<App>>, Form(form): Form<BackupForm>) -> PageResult {
    let paths: Vec<PathBuf> = form
        .paths
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return Err(Fail::bad("nothing to back up: give at least one path"));
    }
    if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
        return Err(Fail::bad(format!("{} is not an absolute path", p.display())));
    }
    let tags: Vec<String> = form
        .tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let title = format!(
        "Backup of {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(app
        .jobs
        .start("backup", title, move |job| {
            use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
            let lock = repo
                .lock(snap_core::lock::LockKind::Shared, "ui backup", wait, stop)
                .map_err(|e| e.to_string())?;
            let options = ArchiveOptions {
                source: Source::Paths(paths),
                excludes: Vec::new(),
                exclude_files: Vec::new(),
                one_file_system: false,
                tags,
                host: snap_core::snapshot::hostname(),
                parent: ParentChoice::Latest,
                compression: None,
                threads: 0,
                checkpoint_interval: None,
                selection: archiver::Selection::default(),
                description: None,
                dry_run: false,
                list_changes: false,
            };
            let result = archiver::archive(&repo, options, job, stop, &lock).map_err(|e| e.to_string())?;
            let (files, size, added) = summary_cells(&result.snapshot);
            Ok(html! {
                p #result {
                    "Snapshot "
                    a #new-snapshot href=(format!("/snapshots/{}/browse", result.id.to_hex())) { (result.id.short()) }
                    " saved: " (files) " files, " (size) ", " (added) " added."
                }
                @if !result.warnings.is_empty() {
                    p.error { (result.warnings.len()) " entries could not be read (listed below)." }
                    ul.warnings { @for (p, m) in &result.warnings { li { (p.display()) ": " (m) } } }
                }
            })
        })?
        .into_response())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Time,
    Host,
    Paths,
    Tags,
    Files,
    Size,
    Added,
}

const SORT_KEYS: [(SortKey, &str, &str); 7] = [
    (SortKey::Time, "time", "Time"),
    (SortKey::Host, "host", "Host"),
    (SortKey::Paths, "paths", "Paths"),
    (SortKey::Tags, "tags", "Tags"),
    (SortKey::Files, "files", "Files"),
    (SortKey::Size, "size", "Size"),
    (SortKey::Added, "added", "Added"),
];

async fn snapshots(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let q = query.as_deref();
    let sort_name = query_str(q, "sort").unwrap_or_else(|| "time".into());
    let (sort, sort_name) = SORT_KEYS
        .iter()
        .find(|(_, n, _)| *n == sort_name)
        .map(|(k, n, _)| (*k, *n))
        .unwrap_or((SortKey::Time, "time"));
    let desc = query_str(q, "dir").as_deref() != Some("asc");
    let page: usize = query_str(q, "page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let shared = app.clone();
    let mut all = blocking(move || Ok(shared.list_snapshots()?)).await?;
    all.sort_by(|(ia, a), (ib, b)| {
        let order = match sort {
            SortKey::Time => a.time.cmp(&b.time),
            SortKey::Host => a.host.cmp(&b.host),
            SortKey::Paths => a.paths.cmp(&b.paths),
            SortKey::Tags => a.tags.cmp(&b.tags),
            SortKey::Files => a.summary.files().cmp(&b.summary.files()),
            SortKey::Size => a.summary.bytes_total.cmp(&b.summary.bytes_total),
            SortKey::Added => a.summary.bytes_added_stored.cmp(&b.summary.bytes_added_stored),
        }
        .then(a.time.cmp(&b.time))
        .then(ia.cmp(ib));
        if desc {
            order.reverse()
        } else {
            order
        }
    });
    let pages = all.len().div_ceil(SNAPSHOTS_PER_PAGE).max(1);
    let page = page.min(pages);
    let shown = all
        .iter()
        .skip((page - 1) * SNAPSHOTS_PER_PAGE)
        .take(SNAPSHOTS_PER_PAGE);
    let link = |key: &str, dir: &str, page: usize| format!("/snapshots?sort={key}&dir={dir}&page={page}");
    let dir_name = if desc { "desc" } else { "asc" };
    let body = html! {
        @if all.is_empty() {
            (html::empty("This repository has no snapshots yet. Back one up from the dashboard."))
        } @else {
            p { (all.len()) " snapshots" }
            div.scroll {
                table #snapshots {
                    thead { tr {
                        th { "ID" }
                        @for (_, key, label) in SORT_KEYS {
                            @let next_dir = if key == sort_name && desc { "asc" } else { "desc" };
                            th class=[(key == sort_name).then_some("sorted")] {
                                a href=(link(key, next_dir, 1)) {
                                    (label)
                                    @if key == sort_name { @if desc { " ▼" } @else { " ▲" } }
                                }
                            }
                        }
                        th { "" }
                    } }
                    tbody {
                        @for (id, s) in shown {
                            @let (files, size, added) = summary_cells(s);
                            tr {
                                td.mono { a href=(format!("/snapshots/{}/browse", id.to_hex())) { (id.short()) }
                                    @if s.is_checkpoint() { " (checkpoint)" } }
                                td { (local_time(&s.time)) }
                                td { (s.host) }
                                td.path { (s.paths.join(" ")) }
                                td { (s.tags.join(", ")) }
                                td.num { (files) }
                                td.num { (size) }
                                td.num { (added) }
                                td { a href=(format!("/restore?snapshot={}", id.to_hex())) { "Restore" } }
                            }
                        }
                    }
                }
            }
            nav.pages {
                @if page > 1 { a href=(link(sort_name, dir_name, page - 1)) { "← Newer" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a href=(link(sort_name, dir_name, page + 1)) { "Older →" } }
            }
            section.card {
                h2 { "Forget by policy" }
                p { "Shows what a policy keeps and removes, per host and path set; nothing is removed until you confirm." }
                (policy_form(&PolicyForm::default()))
            }
        }
    };
    Ok(html::page("Snapshots", "/snapshots", &session, body))
}

#[derive(Clone, Default, serde::Deserialize)]
struct PolicyForm {
    #[serde(default)]
    last: String,
    #[serde(default)]
    daily: String,
    #[serde(default)]
    weekly: String,
    #[serde(default)]
    monthly: String,
    #[serde(default)]
    yearly: String,
    /// The confirm form: the full ids the preview showed as removed.
    #[serde(default)]
    expect: String,
}

fn policy_form(f: &PolicyForm) -> Markup {
    html! {
        form.inline method="get" action="/forget" {
            @for (name, label, value) in [("last", "Keep last", &f.last), ("daily", "daily", &f.daily),
                ("weekly", "weekly", &f.weekly), ("monthly", "monthly", &f.monthly), ("yearly", "yearly", &f.yearly)] {
                label { (label) " " input type="number" min="0" name=(name) value=(value); }
            }
            button type="submit" { "Preview" }
        }
    }
}

impl PolicyForm {
    fn rules(&self) -> Result<snap_core::policy::KeepRules, Fail> {
        use snap_core::policy::Count;
        let count = |name: &str, v: &str| -> Result<Option<Count>, Fail> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<u32>()
                .map(|n| Some(Count::N(n)))
                .map_err(|_| Fail::bad(format!("keep {name}: {v:?} is not a count")))
        };
        Ok(snap_core::policy::KeepRules {
            last: count("last", &self.last)?,
            daily: count("daily", &self.daily)?,
            weekly: count("weekly", &self.weekly)?,
            monthly: count("monthly", &self.monthly)?,
            yearly: count("yearly", &self.yearly)?,
            ..Default::default()
        })
    }
}

fn forget_plan(repo: &Repository, rules: snap_core::policy::KeepRules) -> Result<snap_core::forget::ForgetPlan, Fail> {
    let options = snap_core::forget::PolicyOptions {
        rules,
        group_by: Default::default(),
        filter: Default::default(),
        allow_empty_group: false,
    };
    Ok(snap_core::forget::plan(
        repo,
        &options,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    )?)
}

async fn forget_preview(
    State(app): State<Arc<App>>,
    axum::extract::Query(form): axum::extract::Query<PolicyForm>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let rules = form.rules()?;
    if rules.is_empty() {
        return Err(Fail::bad("give at least one keep rule"));
    }
    let repo = app.repo.clone();
    let plan = blocking(move || forget_plan(&repo, rules)).await?;
    let expect: Vec<String> = plan.remove.iter().map(|id| id.to_hex()).collect();
    let body = html! {
        (policy_form(&form))
        @for group in &plan.groups {
            section.card {
                h2 { (group.group.to_string()) }
                p { "Keep " (group.keep.len()) ", remove " (group.remove.len()) }
                table.forget {
                    thead { tr { th { "Snapshot" } th { "Time" } th { "Decision" } th { "Why" } } }
                    tbody {
                        @for e in &group.keep { tr.keep { td.mono { (&e.id[..8]) } td { (e.time) } td { "keep" } td { (e.reasons.join(", ")) } } }
                        @for e in &group.remove { tr.remove { td.mono { (&e.id[..8]) } td { (e.time) } td { "remove" } td { "" } } }
                    }
                }
            }
        }
        @if expect.is_empty() {
            (html::empty("This policy keeps every snapshot: nothing to remove."))
        } @else {
            form method="post" action="/forget" {
                (csrf_field(&session))
                input type="hidden" name="last" value=(form.last);
                input type="hidden" name="daily" value=(form.daily);
                input type="hidden" name="weekly" value=(form.weekly);
                input type="hidden" name="monthly" value=(form.monthly);
                input type="hidden" name="yearly" value=(form.yearly);
                input type="hidden" name="expect" value=(expect.join(","));
                button.danger type="submit" { "Forget " (expect.len()) " snapshots" }
            }
            p.note { "Forget removes the snapshot records; `snap prune` frees their data." }
        }
    };
    Ok(html::page("Forget: preview", "/snapshots", &session, body))
}

async fn forget_run(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Form(form): Form<PolicyForm>,
) -> PageResult {
    let rules = form.rules()?;
    if rules.is_empty() {
        return Err(Fail::bad("give at least one keep rule"));
    }
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let expect: Vec<String> = form
        .expect
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let removed = blocking(move || {
        let lock = repo.lock(snap_core::lock::LockKind::Exclusive, "ui forget", wait, stop)?;
        let plan = forget_plan(&repo, rules)?;
        let mut now: Vec<String> = plan.remove.iter().map(|id| id.to_hex()).collect();
        let mut before = expect;
        now.sort();
        before.sort();
        if now != before {
            return Err(Fail(
                StatusCode::CONFLICT,
                "the snapshots changed since the preview; nothing was removed: preview again".into(),
            ));
        }
        snap_core::forget::remove(&repo, &plan.remove, &lock)?;
        Ok(plan.remove.len())
    })
    .await?;
    let body = html! {
        p.ok #result { "Forgot " (removed) " snapshots." }
        p { a href="/snapshots" { "Back to the snapshots" } }
    };
    Ok(html::page("Forget", "/snapshots", &session, body))
}

fn mode_string(kind: NodeKind, mode: u32) -> String {
    let mut out = String::from(match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    });
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

fn crumbs(id: &SnapshotId, s: &Snapshot, components: &[Vec<u8>]) -> Markup {
    let hex = id.to_hex();
    html! {
        nav.crumbs {
            a href=(format!("/snapshots/{hex}/browse")) { (id.short()) " (" (local_time(&s.time)) ")" }
            @for i in 0..components.len() {
                " / "
                @let prefix: Vec<u8> = components[..=i].iter().flat_map(|c| { let mut v = b"/".to_vec(); v.extend_from_slice(c); v }).collect();
                a href=(format!("/snapshots/{hex}/browse?path={}", enc(&prefix))) { (String::from_utf8_lossy(&components[i])) }
            }
        }
    }
}

/// The directory at `components` (the root tree when empty), or the node there if it is not one.
fn open_dir(repo: &Repository, s: &Snapshot, components: &[Vec<u8>]) -> Result<Result<Tree, Node>, Fail> {
    if components.is_empty() {
        return Ok(Ok(Tree::load(repo, &s.tree)?));
    }
    let node =
        tree::lookup_path(repo, &s.tree, components)?.ok_or_else(|| Fail::not_found("no such path in the snapshot"))?;
    match node.subtree {
        Some(sub) => Ok(Ok(Tree::load(repo, &sub)?)),
        None => Ok(Err(node)),
    }
}

async fn browse(
    State(app): State<Arc<App>>,
    Path(spec): Path<String>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let q = query.as_deref();
    let (path, components) = snapshot_path(query_bytes(q, "path"))?;
    let page: usize = query_str(q, "page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let repo = app.repo.clone();
    let comps = components.clone();
    let (id, s, dir) = blocking(move || {
        let (id, s) = load_snapshot(&repo, &spec)?;
        let dir = open_dir(&repo, &s, &comps)?;
        Ok((id, s, dir))
    })
    .await?;
    let tree = match dir {
        Ok(tree) => tree,
        Err(_) => {
            return Ok(Redirect::to(&format!(
                "/snapshots/{}/file?path={}",
                id.to_hex(),
                enc(path.as_os_str().as_bytes())
            ))
            .into_response())
        }
    };
    let hex = id.to_hex();
    let pages = tree.nodes.len().div_ceil(ENTRIES_PER_PAGE).max(1);
    let page = page.min(pages);
    let base = path.as_os_str().as_bytes();
    let child = |name: &[u8]| {
        let mut p = base.to_vec();
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        enc(&p)
    };
    let here = enc(base);
    let body = html! {
        (crumbs(&id, &s, &components))
        p.actions {
            "Download this directory as "
            a href=(format!("/snapshots/{hex}/archive?format=tar&path={here}")) { "tar" } " or "
            a href=(format!("/snapshots/{hex}/archive?format=zip&path={here}")) { "zip" }
            " · " a href=(format!("/restore?snapshot={hex}&path={here}")) { "Restore…" }
        }
        @if tree.nodes.is_empty() {
            (html::empty("This directory is empty."))
        } @else {
            p { (tree.nodes.len()) " entries" }
            div.scroll {
                table #entries {
                    thead { tr { th { "Name" } th { "Type" } th.num { "Size" } th { "Modified" } th { "Mode" } th { "" } } }
                    tbody {
                        @for node in tree.nodes.iter().skip((page - 1) * ENTRIES_PER_PAGE).take(ENTRIES_PER_PAGE) {
                            @let name = node.name_lossy();
                            @let target = child(&node.name);
                            tr {
                                td.path {
                                    @match node.kind {
                                        NodeKind::Dir => a.dir href=(format!("/snapshots/{hex}/browse?path={target}")) { (name) "/" },
                                        _ => a href=(format!("/snapshots/{hex}/file?path={target}")) { (name) },
                                    }
                                }
                                td { (snap_core::ls::kind_name(node.kind)) }
                                td.num { @if node.kind == NodeKind::File { (human_bytes(node.size)) } }
                                td { (html::time_ns(node.mtime_ns)) }
                                td.mono { (mode_string(node.kind, node.mode)) }
                                td { @if node.kind == NodeKind::File {
                                    a.download href=(format!("/snapshots/{hex}/download?path={target}")) { "Download" }
                                } }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pages {
                    @if page > 1 { a href=(format!("/snapshots/{hex}/browse?path={here}&page={}", page - 1)) { "← Previous" } }
                    span { "Page " (page) " of " (pages) }
                    @if page < pages { a href=(format!("/snapshots/{hex}/browse?path={here}&page={}", page + 1)) { "Next →" } }
                }
            }
        }
    };
    Ok(html::page("Browse", "/snapshots", &session, body))
}

/// A snapshot, a normalized path of it, that path's components and its node.
type Located = (SnapshotId, Snapshot, PathBuf, Vec<Vec<u8>>, Node);

/// The node at the query's path, which must not be the root.
async fn node_at(app: &App, spec: String, query: Option<&str>) -> Result<Located, Fail> {
    let (path, components) = snapshot_path(query_bytes(query, "path"))?;
    if components.is_empty() {
        return Err(Fail::bad("give a path below the snapshot's root"));
    }
    let repo = app.repo.clone();
    let comps = components.clone();
    let (id, s, node) = blocking(move || {
        let (id, s) = load_snapshot(&repo, &spec)?;
        let node = tree::lookup_path(&repo, &s.tree, &comps)?
            .ok_or_else(|| Fail::not_found("no such path in the snapshot"))?;
        Ok((id, s, node))
    })
    .await?;
    Ok((id, s, path, components, node))
}

async fn file_details(
    State(app): State<Arc<App>>,
    Path(spec): Path<String>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let (id, s, path, components, node) = node_at(&app, spec, query.as_deref()).await?;
    let hex = id.to_hex();
    let here = enc(path.as_os_str().as_bytes());
    let body = html! {
        (crumbs(&id, &s, &components))
        dl.card {
            dt { "Path" } dd.path { (path.display()) }
            dt { "Type" } dd { (snap_core::ls::kind_name(node.kind)) }
            dt { "Size" } dd { (human_bytes(node.size)) " (" (node.size) " bytes)" }
            dt { "Modified" } dd { (html::time_ns(node.mtime_ns)) }
            dt { "Mode" } dd.mono { (mode_string(node.kind, node.mode)) " (" (format!("{:04o}", node.mode)) ")" }
            dt { "Owner" } dd { (if node.user.is_empty() { node.uid.to_string() } else { node.user.to_string() })
                ":" (if node.group.is_empty() { node.gid.to_string() } else { node.group.to_string() }) }
            @if node.kind == NodeKind::File { dt { "Chunks" } dd { (node.content.len()) } }
            @if node.kind == NodeKind::Symlink { dt { "Target" } dd.path { (String::from_utf8_lossy(&node.link_target)) } }
            @if node.links > 1 { dt { "Hard links" } dd { (node.links) } }
            @if !node.xattrs.is_empty() { dt { "Extended attributes" } dd { (node.xattrs.len()) } }
        }
        p.actions {
            @if node.kind == NodeKind::File {
                a.button #download href=(format!("/snapshots/{hex}/download?path={here}")) { "Download" } " "
            }
            a href=(format!("/restore?snapshot={hex}&path={here}")) { "Restore…" }
        }
    };
    Ok(html::page("File", "/snapshots", &session, body))
}

/// A `Write` that hands 256 KiB pieces to a response body; a closed
/// connection fails the next write (BrokenPipe), which stops the engine.
struct BodyWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const PIECE: usize = 256 * 1024;

impl BodyWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the browser closed the download"))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A body written by `write` on a blocking thread as the browser reads it.
/// An error midway ends the body with an error (the download fails rather
/// than ending short and looking whole).
fn streamed(write: impl FnOnce(&mut BodyWriter) -> Result<(), String> + Send + 'static) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = BodyWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
        };
        let result = write(&mut out).and_then(|_| out.send().map_err(|e| e.to_string()));
        if let Err(message) = result {
            tracing::warn!("download failed: {message}");
            let _ = tx.blocking_send(Err(std::io::Error::other(message)));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 one (RFC 6266).
fn disposition(name: &[u8]) -> HeaderValue {
    let ascii: String = String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ascii = if ascii.trim_matches('.').is_empty() {
        "download".to_string()
    } else {
        ascii
    };
    let exact: String = name
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn content_type(name: &[u8]) -> &'static str {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "txt" | "md" | "log" | "csv" | "conf" | "ini" | "rs" | "py" | "sh" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "gz" => "application/gzip",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Headers of a download: never shown inline, and sandboxed should a
/// browser try (a backed-up HTML file must not run as this UI's page).
fn download_response(body: Body, name: &[u8], content_type: &'static str, length: Option<u64>) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_DISPOSITION, disposition(name));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

async fn download(State(app): State<Arc<App>>, Path(spec): Path<String>, RawQuery(query): RawQuery) -> PageResult {
    let (_, _, path, _, node) = node_at(&app, spec, query.as_deref()).await?;
    if node.kind != NodeKind::File {
        return Err(Fail::bad(format!("{} is not a file", path.display())));
    }
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let (size, name) = (node.size, node.name.clone());
    let body = streamed(move |out| {
        let _lock = repo.read_lock("ui download", wait, stop).map_err(|e| e.to_string())?;
        snap_core::export::copy_content(&repo, &path, &node, out).map_err(|e| e.to_string())?;
        Ok(())
    });
    Ok(download_response(body, &name, content_type(&name), Some(size)))
}

async fn archive(State(app): State<Arc<App>>, Path(spec): Path<String>, RawQuery(query): RawQuery) -> PageResult {
    use snap_core::export::{ArchiveFormat, ExportOptions};
    let q = query.as_deref();
    let format = match query_str(q, "format").as_deref() {
        None | Some("tar") => ArchiveFormat::Tar,
        Some("zip") => ArchiveFormat::Zip,
        Some(other) => return Err(Fail::bad(format!("unknown archive format {other:?}: tar or zip"))),
    };
    let (path, components) = snapshot_path(query_bytes(q, "path"))?;
    let repo = app.repo.clone();
    let (_, s) = {
        let repo = repo.clone();
        blocking(move || load_snapshot(&repo, &spec)).await?
    };
    let mut name = components.last().cloned().unwrap_or_else(|| b"snapshot".to_vec());
    name.extend_from_slice(if format == ArchiveFormat::Zip { b".zip" } else { b".tar" });
    let options = ExportOptions {
        format,
        path: (!components.is_empty()).then_some(path),
    };
    let (stop, wait) = (app.stop, app.retry_lock);
    let body = streamed(move |out| {
        let _lock = repo.read_lock("ui archive", wait, stop).map_err(|e| e.to_string())?;
        snap_core::export::export(&repo, &s, &options, out, stop).map_err(|e| e.to_string())?;
        Ok(())
    });
    let kind = if format == ArchiveFormat::Zip {
        "application/zip"
    } else {
        "application/x-tar"
    };
    Ok(download_response(body, &name, kind, None))
}

/// Two snapshots to compare: a form of the newest ones, and the changes.
async fn diff(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let q = query.as_deref();
    let from = query_str(q, "from").filter(|s| !s.is_empty());
    let to = query_str(q, "to").filter(|s| !s.is_empty());
    let (shared, repo, stop) = (app.clone(), app.repo.clone(), app.stop);
    let (all, result) = blocking(move || {
        let all = shared.list_snapshots()?;
        let result = match (&from, &to) {
            (Some(from), Some(to)) => {
                let (fid, f) = load_snapshot(&repo, from)?;
                let (tid, t) = load_snapshot(&repo, to)?;
                let mut changes = Vec::new();
                let stats = snap_core::diff::diff_trees(&repo, &f.tree, &t.tree, stop, &mut |c| {
                    if changes.len() < DIFF_SHOWN {
                        changes.push(c.clone());
                    }
                    Ok(())
                })?;
                Some((fid, tid, stats, changes))
            }
            _ => None,
        };
        Ok((all, result))
    })
    .await?;
    let options = |selected: Option<&SnapshotId>| {
        html! {
            @for (id, s) in all.iter().rev() {
                option value=(id.to_hex()) selected[Some(id) == selected] { (id.short()) " " (local_time(&s.time)) " " (s.paths.join(" ")) }
            }
        }
    };
    let newest = all.iter().rev().map(|(id, _)| id);
    let (default_to, default_from) = {
        let mut it = newest;
        (it.next(), it.next())
    };
    let body = html! {
        @if all.len() < 2 {
            (html::empty("A diff needs two snapshots; this repository has fewer."))
        } @else {
            form.inline method="get" action="/diff" {
                label { "From " select name="from" { (options(result.as_ref().map(|r| &r.0).or(default_from))) } }
                label { "To " select name="to" { (options(result.as_ref().map(|r| &r.1).or(default_to))) } }
                button type="submit" { "Compare" }
            }
        }
        @if let Some((_, _, stats, changes)) = &result {
            p #diff-stats {
                (stats.added) " added, " (stats.removed) " removed, " (stats.modified) " modified, "
                (stats.metadata) " metadata only, " (stats.type_changed) " type changed"
            }
            @if changes.is_empty() { (html::empty("The two snapshots hold the same entries.")) }
            @else {
                div.scroll { table #changes {
                    thead { tr { th { "" } th { "Path" } th.num { "Before" } th.num { "After" } } }
                    tbody { @for c in changes {
                        tr { td.mono { (c.kind.marker()) } td.path { (c.path.display()) }
                             td.num { @if let Some(n) = &c.old { @if n.kind == NodeKind::File { (human_bytes(n.size)) } } }
                             td.num { @if let Some(n) = &c.new { @if n.kind == NodeKind::File { (human_bytes(n.size)) } } } }
                    } }
                } }
            }
        }
    };
    Ok(html::page("Diff", "/diff", &session, body))
}

async fn verify_page(Extension(session): Extension<Session>) -> PageResult {
    let body = html! {
        section.card {
            p { "Checks that every snapshot's trees and data are indexed and readable; with data, reads and checks every pack." }
            form method="post" action="/verify" {
                (csrf_field(&session))
                label { input type="checkbox" name="read_data" value="1"; " Read all data (slow: downloads the whole repository)" }
                button type="submit" { "Start verify" }
            }
        }
    };
    Ok(html::page("Verify", "/verify", &session, body))
}

#[derive(serde::Deserialize)]
struct VerifyForm {
    #[serde(default)]
    read_data: Option<String>,
}

async fn verify_run(State(app): State<Arc<App>>, Form(form): Form<VerifyForm>) -> PageResult {
    use snap_core::verify::{self, DataSubset, VerifyOptions};
    let (repo, stop, wait) = (app.repo.clone(), app.stop, app.retry_lock);
    let read_data = form.read_data.is_some().then_some(DataSubset::All);
    Ok(app
        .jobs
        .start("verify", "Verify".into(), move |job| {
            let _lock = repo.read_lock("ui verify", wait, stop).map_err(|e| e.to_string())?;
            let report = verify::verify(&repo, &VerifyOptions { read_data }, job, stop).map_err(|e| e.to_string())?;
            let s = &report.stats;
            Ok(html! {
                p #result { @if report.problems.is_empty() { span.ok { "No problems found." } }
                    @else { span.error { (report.problems.len()) " problems found." } } }
                p { (s.snapshots) " snapshots, " (s.trees) " trees, " (s.packs) " packs, " (s.packs_read) " packs read (" (human_bytes(s.bytes_read)) ")" }
                @if !report.problems.is_empty() {
                    table { thead { tr { th { "Severity" } th { "Object" } th { "Problem" } } }
                        tbody { @for p in &report.problems { tr { td { (format!("{:?}", p.severity)) } td.mono { (p.object) } td { (p.message) } } } } }
                }
            })
        })?
        .into_response())
}
