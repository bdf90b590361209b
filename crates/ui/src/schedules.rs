//! The schedules page: each profile's schedule and retention (read, and
//! edited through a form), its jobs' next and last runs, and the last
//! backup the daemon recorded. Profiles, schedules and the daemon's state
//! belong to the CLI (its config file and `state.json`); this crate sees
//! them only through [`ProfileSource`], which `snap ui` implements, so the
//! validation of an edit is the config loader's own and not a copy.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use jiff::Timestamp;
use maud::{html, Markup};

use crate::auth::Session;
use crate::html::{self, csrf_field, human_bytes, local_time, query_str, PageResult};
use crate::pages::blocking;
use crate::App;

/// Where the profiles come from. Called on a blocking thread, on every
/// page load: the config file and the daemon's state change under a
/// running UI (by hand, by the daemon), so nothing is kept between calls.
pub trait ProfileSource: Send + Sync {
    /// Every profile of the config file with its daemon state.
    fn list(&self) -> Result<ProfileList, String>;
    /// Sets `values` (`(key, value)` as [`Setting::key`] names them; an
    /// empty value removes the key) in the named profile, keeping the rest
    /// of the file as it is. An invalid value changes nothing and the
    /// error says why. Returns a sentence for the page on success.
    fn save(&self, profile: &str, values: &[(String, String)]) -> Result<String, String>;
}

/// What [`ProfileSource::list`] found.
#[derive(Clone, Debug, Default)]
pub struct ProfileList {
    /// The config file, for the page.
    pub config: String,
    /// Whether the config file exists (none is an empty state, not an error).
    pub exists: bool,
    /// The daemon's state directory, for the page.
    pub state_dir: String,
    /// The profile `snap ui --profile` names, if any.
    pub selected: Option<String>,
    pub profiles: Vec<ProfileView>,
}

/// One profile, inheritance resolved.
#[derive(Clone, Debug, Default)]
pub struct ProfileView {
    pub name: String,
    pub inherit: Option<String>,
    pub repository: Option<String>,
    pub paths: Vec<String>,
    /// Editable schedule keys (`schedule.backup`, ...), as resolved.
    pub schedule: Vec<Setting>,
    /// Editable retention keys (`retention.keep-last`, ...), as resolved.
    pub retention: Vec<Setting>,
    /// Other schedule settings, read only (`timezone = local`, ...).
    pub notes: Vec<String>,
    /// The daemon's jobs of this profile.
    pub jobs: Vec<JobView>,
    pub last_backup: Option<BackupView>,
}

/// One editable key with its current value (empty: unset).
#[derive(Clone, Debug, Default)]
pub struct Setting {
    /// The form field and the dotted key below the profile's table.
    pub key: String,
    pub label: String,
    pub value: String,
    /// A hint for the field: the accepted forms, or the default when unset.
    pub help: String,
}

/// A scheduled job: when it runs next and how its last run went.
#[derive(Clone, Debug, Default)]
pub struct JobView {
    /// `backup`, `prune` or `verify`.
    pub job: String,
    pub schedule: String,
    pub next_run: Option<Timestamp>,
    pub last_start: Option<Timestamp>,
    pub last_end: Option<Timestamp>,
    /// `success`, `incomplete`, `failed`, `interrupted`; none before a first run.
    pub result: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_seconds: Option<f64>,
    /// What the daemon stored about the last failure.
    pub error: Option<String>,
    pub runs: u64,
    pub skipped: u64,
}

/// The last backup of a profile that wrote a snapshot.
#[derive(Clone, Debug, Default)]
pub struct BackupView {
    pub snapshot_id: String,
    pub time: Option<Timestamp>,
    pub files: u64,
    pub errors: u64,
    pub bytes_total: u64,
    pub bytes_added: u64,
}

impl ProfileView {
    /// The earliest next run of its jobs.
    pub fn next_run(&self) -> Option<(&JobView, Timestamp)> {
        self.jobs
            .iter()
            .filter_map(|j| j.next_run.map(|t| (j, t)))
            .min_by_key(|(_, t)| *t)
    }
}

/// The profiles, or why there are none, for a page (never fails the page).
pub async fn load(app: &Arc<App>) -> Result<Option<ProfileList>, String> {
    let Some(source) = app.profiles.clone() else {
        return Ok(None);
    };
    blocking(move || Ok(source.list())).await.map_err(|e| e.1)?.map(Some)
}

fn when(t: Option<Timestamp>) -> String {
    t.map(|t| local_time(&t)).unwrap_or_else(|| "-".into())
}

fn result_cell(result: Option<&str>) -> Markup {
    html! {
        @match result {
            None => { "never run" }
            Some("success") => { span.ok { "success" } }
            Some(other) => { span.error { (other) } }
        }
    }
}

/// The dashboard's card: each profile's last backup and next run.
pub fn dashboard_card(list: &Result<Option<ProfileList>, String>) -> Markup {
    html! {
        section.card #schedule {
            h2 { "Schedule" }
            @match list {
                Err(e) => { p.error { "The profiles cannot be read: " (e) } }
                Ok(None) => { (html::empty("No profiles configured: scheduled backups and retention come from profiles (see Schedules).")) }
                Ok(Some(list)) if list.profiles.is_empty() => {
                    (html::empty(&format!("No profiles configured in {}: scheduled backups and retention come from profiles (see Schedules).", list.config)))
                }
                Ok(Some(list)) => {
                    div.scroll { table #profiles {
                        thead { tr { th { "Profile" } th { "Last backup" } th { "Result" } th.num { "Size" } th { "Next run" } } }
                        tbody { @for p in &list.profiles {
                            @let backup_job = p.jobs.iter().find(|j| j.job == "backup");
                            tr {
                                td { a href=(format!("/schedules#profile-{}", p.name)) { (p.name) }
                                    @if list.selected.as_deref() == Some(p.name.as_str()) { " (this UI)" } }
                                td { @match &p.last_backup { Some(b) => { (when(b.time)) }, None => { "-" } } }
                                td { (result_cell(backup_job.and_then(|j| j.result.as_deref()))) }
                                td.num { @if let Some(b) = &p.last_backup { (human_bytes(b.bytes_total)) } }
                                td { @match p.next_run() {
                                    Some((job, t)) => { (local_time(&t)) " (" (job.job) ")" },
                                    None => { "not scheduled" },
                                } }
                            }
                        } }
                    } }
                    p.note { a href="/schedules" { "Schedules and retention" } }
                }
            }
        }
    }
}

/// A validation failure to show above the profile's form.
struct Refused {
    profile: String,
    message: String,
    values: Vec<(String, String)>,
}

fn page_body(
    list: &Result<Option<ProfileList>, String>,
    session: &Session,
    saved: Option<&str>,
    refused: Option<&Refused>,
) -> Markup {
    html! {
        @if let Some(saved) = saved { p.ok #saved { (saved) } }
        @match list {
            Err(e) => { p.error #config-error { "The profiles cannot be read: " (e) } }
            Ok(None) => { (html::empty("No profiles configured. Schedules and retention are read from profiles; until one is configured, back up from the dashboard and forget from the snapshots page.")) }
            Ok(Some(list)) if list.profiles.is_empty() => {
                (html::empty(&format!(
                    "No profiles configured{} in {}. Schedules and retention are read from profiles (README \"Profiles\"); until one is configured, back up from the dashboard and forget from the snapshots page.",
                    if list.exists { "" } else { " (no such file)" }, list.config)))
            }
            Ok(Some(list)) => {
                @if let Some(r) = refused.filter(|r| !list.profiles.iter().any(|p| p.name == r.profile)) {
                    p.error.refused { (r.message) }
                }
                p.note { "Profiles of " span.path { (list.config) } "; runs as recorded by the daemon in " span.path { (list.state_dir) } "." }
                @for p in &list.profiles {
                    (profile_card(p, list.selected.as_deref() == Some(p.name.as_str()), session,
                        refused.filter(|r| r.profile == p.name)))
                }
            }
        }
    }
}

fn profile_card(p: &ProfileView, selected: bool, session: &Session, refused: Option<&Refused>) -> Markup {
    let value_of = |s: &Setting| -> String {
        refused
            .and_then(|r| r.values.iter().find(|(k, _)| *k == s.key).map(|(_, v)| v.clone()))
            .unwrap_or_else(|| s.value.clone())
    };
    let field = |s: &Setting| {
        let id = format!("{}-{}", p.name, s.key.replace('.', "-"));
        html! {
            label for=(id) { (s.label) @if !s.help.is_empty() { " " span.note { (s.help) } } }
            input type="text" id=(id) name=(s.key) value=(value_of(s));
        }
    };
    html! {
        section.card.profile id=(format!("profile-{}", p.name)) {
            h2 { "Profile " (p.name) @if selected { " (this UI's repository)" } }
            dl {
                @if let Some(repo) = &p.repository { dt { "Repository" } dd.path { (repo) } }
                @if !p.paths.is_empty() { dt { "Paths" } dd.path { (p.paths.join(" ")) } }
                @if let Some(parent) = &p.inherit { dt { "Inherits" } dd { (parent) } }
                @if let Some(b) = &p.last_backup {
                    dt { "Last backup" } dd {
                        (when(b.time)) ", snapshot "
                        a.mono href=(format!("/snapshots/{}/browse", b.snapshot_id)) { (b.snapshot_id.get(..8).unwrap_or(&b.snapshot_id)) }
                        ": " (b.files) " files, " (human_bytes(b.bytes_total)) " (" (human_bytes(b.bytes_added)) " added)"
                        @if b.errors > 0 { ", " span.error { (b.errors) " entries could not be read" } }
                    }
                }
            }
            h3 { "Jobs" }
            @if p.jobs.is_empty() {
                (html::empty("No scheduled jobs: give this profile a schedule below and run `snap daemon`."))
            } @else {
                div.scroll { table.jobs {
                    thead { tr { th { "Job" } th { "Schedule" } th { "Next run" } th { "Last run" } th { "Result" } th.num { "Duration" } th.num { "Runs" } } }
                    tbody { @for j in &p.jobs {
                        tr {
                            td { (j.job) }
                            td.mono { (j.schedule) }
                            td { (when(j.next_run)) }
                            td { (when(j.last_start)) }
                            td { (result_cell(j.result.as_deref()))
                                 @if let Some(code) = j.exit_code { @if j.result.as_deref() != Some("success") { " (exit " (code) ")" } } }
                            td.num { @if let Some(d) = j.duration_seconds { (format!("{d:.1} s")) } }
                            td.num { (j.runs) @if j.skipped > 0 { " (" (j.skipped) " skipped)" } }
                        }
                        @if let Some(error) = &j.error {
                            tr.log { td colspan="7" { span.note { "Last error: " } span.error.mono-wrap { (error) } } }
                        }
                    } }
                } }
                p.note { "The daemon keeps no log file of its own: its log goes to its standard error (with the systemd unit, `journalctl --user -u snap-daemon`); the last error of each job is kept above." }
            }
            @if !p.notes.is_empty() { p.note { (p.notes.join("; ")) } }
            form.settings method="post" action="/schedules" {
                (csrf_field(session))
                input type="hidden" name="profile" value=(p.name);
                @if let Some(r) = refused { p.error.refused { (r.message) } }
                fieldset {
                    legend { "Schedule" }
                    @for s in &p.schedule { (field(s)) }
                }
                fieldset {
                    legend { "Retention" }
                    div.grid { @for s in &p.retention { div { (field(s)) } } }
                }
                button type="submit" { "Save " (p.name) }
                p.note { "Checked as `snap config check` checks it and written into the config file, keeping its other keys and comments. A running `snap daemon` picks the change up on SIGHUP (`systemctl --user reload snap-daemon`, or `kill -HUP` its pid)." }
            }
        }
    }
}

pub async fn page(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    Extension(session): Extension<Session>,
) -> PageResult {
    let saved = query_str(query.as_deref(), "saved");
    let list = load(&app).await;
    let saved = saved.map(|name| {
        format!("Saved profile {name}. A running daemon picks the change up on SIGHUP (systemctl --user reload snap-daemon).")
    });
    Ok(html::page(
        "Schedules",
        "/schedules",
        &session,
        page_body(&list, &session, saved.as_deref(), None),
    ))
}

pub async fn save(
    State(app): State<Arc<App>>,
    Extension(session): Extension<Session>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let Some(source) = app.profiles.clone() else {
        return Err(html::Fail::bad("no profiles to edit: this UI has no config file"));
    };
    let profile = fields
        .iter()
        .find(|(k, _)| k == "profile")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| html::Fail::bad("which profile? the form names none"))?;
    let values: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, _)| k != "profile" && k != "csrf")
        .collect();
    let outcome = {
        let (profile, values) = (profile.clone(), values.clone());
        blocking(move || Ok(source.save(&profile, &values))).await?
    };
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/schedules?saved={}", html::enc(profile.as_bytes()))).into_response()),
        Err(message) => {
            // The page again, the refused values in the form and the reason
            // above it: nothing was written.
            let list = load(&app).await;
            let refused = Refused {
                profile,
                message: format!("Not saved: {message}"),
                values,
            };
            let mut response = html::page(
                "Schedules",
                "/schedules",
                &session,
                page_body(&list, &session, None, Some(&refused)),
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}
