//! Long operations (backup, restore, verify) as jobs: each runs on a
//! blocking thread and reports through a [`Progress`] impl into shared
//! counters; its page (`/jobs/ID`) follows them over server-sent events
//! (`/jobs/ID/events`) and shows the result when the job ends. One job of
//! each kind runs at a time (another press gets 409, not a second thread
//! on the same repository); finished jobs are kept for [`KEEP_FOR`], at most
//! [`KEEP_FINISHED`] of them, so a long-running UI does not grow.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};
use snap_core::progress::{Event, Progress};

use crate::auth::Session;
use crate::html::{self, Fail, PageResult};
use crate::App;

/// How a job ended: a rendered result, or an error sentence.
pub enum Outcome {
    Done(Markup),
    Failed(String),
}

/// How long a finished job's page stays reachable, and how many are kept.
pub const KEEP_FOR: Duration = Duration::from_secs(30 * 60);
pub const KEEP_FINISHED: usize = 20;

pub struct Job {
    pub title: String,
    kind: &'static str,
    ended: Mutex<Option<Instant>>,
    total_bytes: AtomicU64,
    total_items: AtomicU64,
    bytes: AtomicU64,
    items: AtomicU64,
    warnings: Mutex<Vec<String>>,
    current: Mutex<String>,
    outcome: Mutex<Option<Outcome>>,
}

impl Job {
    fn new(kind: &'static str, title: String) -> Self {
        Job {
            title,
            kind,
            ended: Mutex::new(None),
            total_bytes: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            items: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
            current: Mutex::new(String::new()),
            outcome: Mutex::new(None),
        }
    }

    fn finished(&self) -> bool {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn snapshot_json(&self) -> String {
        serde_json::json!({
            "total_bytes": self.total_bytes.load(Ordering::Relaxed),
            "total_items": self.total_items.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "items": self.items.load(Ordering::Relaxed),
            "current": *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            "warnings": self.warnings.lock().unwrap_or_else(|e| e.into_inner()).len(),
            "done": self.finished(),
        })
        .to_string()
    }
}

impl Progress for Job {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Total { bytes, items } => {
                self.total_bytes.store(bytes, Ordering::Relaxed);
                self.total_items.store(items, Ordering::Relaxed);
            }
            Event::Bytes(n) => {
                self.bytes.fetch_add(n, Ordering::Relaxed);
            }
            Event::ItemDone(path) => {
                self.items.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut current) = self.current.try_lock() {
                    *current = path.to_string_lossy().into_owned();
                }
            }
            Event::Warning { path, message } => {
                let mut warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
                if warnings.len() < 1000 {
                    warnings.push(format!("{}: {message}", path.display()));
                }
            }
        }
    }
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Arc<Job>>>,
}

impl Jobs {
    /// Starts `work` on a blocking thread; returns the job's page, or 409
    /// while a job of the same `kind` (backup, restore, verify) still runs.
    pub fn start(
        &self,
        kind: &'static str,
        title: String,
        work: impl FnOnce(&Job) -> Result<Markup, String> + Send + 'static,
    ) -> Result<Redirect, Fail> {
        let job = Arc::new(Job::new(kind, title));
        let id = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((running, _)) = jobs.iter().find(|(_, j)| j.kind == kind && !j.finished()) {
                return Err(Fail(
                    StatusCode::CONFLICT,
                    format!("a {kind} is already running (job {running}): wait for it to finish"),
                ));
            }
            prune(&mut jobs, Instant::now());
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            jobs.insert(id, job.clone());
            id
        };
        tokio::task::spawn_blocking(move || {
            let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&job))) {
                Ok(Ok(markup)) => Outcome::Done(markup),
                Ok(Err(message)) => Outcome::Failed(message),
                Err(_) => Outcome::Failed("the operation panicked (a bug: please report it)".into()),
            };
            *job.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        });
        Ok(Redirect::to(&format!("/jobs/{id}")))
    }

    fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }
}

/// Drops finished jobs older than [`KEEP_FOR`], then all but the newest
/// [`KEEP_FINISHED`] finished ones. Running jobs always stay.
fn prune(jobs: &mut HashMap<u64, Arc<Job>>, now: Instant) {
    let ended = |job: &Job| *job.ended.lock().unwrap_or_else(|e| e.into_inner());
    jobs.retain(|_, job| ended(job).is_none_or(|at| now.saturating_duration_since(at) < KEEP_FOR));
    let mut finished: Vec<u64> = jobs
        .iter()
        .filter(|(_, j)| ended(j).is_some())
        .map(|(id, _)| *id)
        .collect();
    if finished.len() > KEEP_FINISHED {
        finished.sort_unstable();
        for id in &finished[..finished.len() - KEEP_FINISHED] {
            jobs.remove(id);
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/events", get(job_events))
        .with_state(app)
}

async fn job_page(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let job = app
        .jobs
        .get(id)
        .ok_or_else(|| Fail::not_found(format!("no job {id}")))?;
    let warnings = job.warnings.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let body = {
        let outcome = job.outcome.lock().unwrap_or_else(|e| e.into_inner());
        html! {
            @match &*outcome {
                None => {
                    section #job data-events=(format!("/jobs/{id}/events")) {
                        p #job-state { "Running…" }
                        progress #job-bar max="100" value="0" {}
                        p #job-counts {}
                        p.path #job-current {}
                        noscript { p { "Reload this page to see how far it is." } }
                    }
                }
                Some(Outcome::Done(markup)) => {
                    p.ok #job-state { "Finished." }
                    (markup)
                }
                Some(Outcome::Failed(message)) => {
                    p.error #job-state { "Failed: " (message) }
                }
            }
            @if !warnings.is_empty() {
                h2 { "Warnings (" (warnings.len()) ")" }
                ul.warnings { @for w in &warnings { li { (w) } } }
            }
        }
    };
    Ok(html::page(&job.title, "", &session, body))
}

/// Progress once every 250 ms until the job ends, then a `done` event
/// (the page reloads to show the result).
async fn job_events(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    let Some(job) = app.jobs.get(id) else {
        return Fail::not_found(format!("no job {id}")).into_response();
    };
    let stream = futures_util::stream::unfold((job, false), |(job, sent_done)| async move {
        if sent_done {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = job.finished();
        let event = SseEvent::default()
            .event(if done { "done" } else { "progress" })
            .data(job.snapshot_json());
        Some((Ok::<_, Infallible>(event), (job, done)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(kind: &'static str, ago: Option<Duration>, now: Instant) -> Arc<Job> {
        let job = Job::new(kind, kind.into());
        *job.ended.lock().unwrap() = ago.map(|a| now - a);
        Arc::new(job)
    }

    #[test]
    fn one_job_of_a_kind_at_a_time() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let jobs = Jobs::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        assert!(jobs
            .start("backup", "first".into(), move |_| {
                let _ = wait.lock().unwrap().recv();
                Ok(html! {})
            })
            .is_ok());
        let refused = jobs.start("backup", "second".into(), |_| Ok(html! {}));
        assert_eq!(refused.err().map(|f| f.0), Some(StatusCode::CONFLICT));
        assert!(jobs.start("verify", "other kind".into(), |_| Ok(html! {})).is_ok());
        release.send(()).unwrap();
        let first = jobs.get(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !first.finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(jobs.start("backup", "after".into(), |_| Ok(html! {})).is_ok());
    }

    #[test]
    fn finished_jobs_are_dropped_by_age_and_count() {
        let now = Instant::now() + KEEP_FOR * 2;
        let mut jobs = HashMap::new();
        jobs.insert(1, ended("backup", Some(KEEP_FOR + Duration::from_secs(1)), now));
        jobs.insert(2, ended("backup", None, now));
        for id in 3..40 {
            jobs.insert(id, ended("verify", Some(Duration::from_secs(1)), now));
        }
        prune(&mut jobs, now);
        assert!(!jobs.contains_key(&1), "too old");
        assert!(jobs.contains_key(&2), "still running");
        assert_eq!(jobs.len(), 1 + KEEP_FINISHED);
        assert!(jobs.contains_key(&39) && !jobs.contains_key(&19), "the newest are kept");
    }
}
