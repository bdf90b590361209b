//! Progress on the terminal: an indicatif bar on stderr fed by snap-core's
//! events. Warnings are printed above the bar.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use snap_core::progress::{Event, Progress};

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar when stderr is a terminal and output is not quiet or JSON.
    pub fn new(quiet: bool, json: bool) -> Self {
        let show = !quiet && !json && std::io::stderr().is_terminal();
        let bar = if show {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn warn(&self, path: &Path, message: &str) {
        // Warnings go to stderr even with --json, whose stdout stays parseable.
        let line = format!(
            "{} {}: {}",
            crate::term::label("warning"),
            crate::term::printable(&path.to_string_lossy()),
            crate::term::printable(message)
        );
        if self.bar.is_hidden() {
            errln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Progress for Bar {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Total { bytes, .. } => {
                if bytes > self.bar.length().unwrap_or(0) {
                    self.bar.set_length(bytes);
                }
            }
            Event::Bytes(n) => self.bar.inc(n),
            Event::ItemDone(_) => {}
            Event::Warning { path, message } => self.warn(path, &message),
        }
    }

    fn shows_total(&self) -> bool {
        !self.bar.is_hidden()
    }
}
