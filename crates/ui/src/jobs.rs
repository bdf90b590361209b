//! Long operations (backup, restore, verify) as jobs: each runs on a
//! blocking thread and reports through a [`Progress`] impl into shared
//! counters; its page (`/jobs/ID`) follows them over server-sent events
//! (`/jobs/ID/events`) and shows the result when the job ends. Jobs live
//! as long as the process; there are few of them (one per button press).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
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

pub struct Job {
    pub title: String,
    total_bytes: AtomicU64,
    total_items: AtomicU64,
    bytes: AtomicU64,
    items: AtomicU64,
    warnings: Mutex<Vec<String>>,
    current: Mutex<String>,
    outcome: Mutex<Option<Outcome>>,
}

impl Job {
    fn new(title: String) -> Self {
        Job {
            title,
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
    /// Starts `work` on a blocking thread; returns the job's page.
    pub fn start(&self, title: String, work: impl FnOnce(&Job) -> Result<Markup, String> + Send + 'static) -> Redirect {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job::new(title));
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job.clone());
        tokio::task::spawn_blocking(move || {
            let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&job))) {
                Ok(Ok(markup)) => Outcome::Done(markup),
                Ok(Err(message)) => Outcome::Failed(message),
                Err(_) => Outcome::Failed("the operation panicked (a bug: please report it)".into()),
            };
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        });
        Redirect::to(&format!("/jobs/{id}"))
    }

    fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
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
