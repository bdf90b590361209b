//! `snap create --stdin-from-command`: a command's standard output (a
//! database dump) as the stream to back up.
//!
//! The command runs without a shell, its standard input empty and its
//! standard error passed through. Its output is read straight from the
//! pipe by the archiver, chunk by chunk, as `--stdin` is: never held whole
//! in memory or in a temporary file. The command's exit status is part of
//! the stream: at the end of its output the command is waited for, and a
//! status other than success is the stream's read error, so the backup
//! fails before any snapshot is written (what was uploaded is indexed and
//! reused by the next try, as for any failed backup).
//!
//! Only the program's name ever appears in messages: its arguments may hold
//! a password (`mysqldump -pSECRET`), so they are neither printed nor stored.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::global::{CANCEL, STDIN_COMMAND_PID};

/// How long a command snap gives up on may take to end after SIGTERM
/// before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The running command and the read end of its output.
pub struct CommandStream {
    /// `command 'NAME'`, for messages.
    label: String,
    /// `None` once the command has been waited for.
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    /// Set at the end of the output: `Err` with why the stream is not whole.
    ended: Option<std::result::Result<(), String>>,
}

/// The file name a command's output is stored under when `--stdin-filename`
/// is not given: the program's base name with `.dump` (`pg_dump.dump`), so
/// backups of different commands are different paths (and each one's
/// `latest` and retention are its own).
pub fn default_filename(program: &OsString) -> String {
    let base = Path::new(program).file_name().and_then(|n| n.to_str());
    match base {
        Some(base) if !base.is_empty() => format!("{base}.dump"),
        _ => "command.dump".into(),
    }
}

/// `command 'NAME'`, the program as given (without its arguments).
pub fn label(program: &OsString) -> String {
    format!("command '{}'", crate::term::printable(&program.to_string_lossy()))
}

impl CommandStream {
    /// Starts `argv[0]` with the rest as its arguments, found on `PATH` as
    /// a shell would but without one.
    pub fn spawn(argv: &[OsString]) -> Result<CommandStream> {
        let (program, args) = argv
            .split_first()
            .context("--stdin-from-command needs a command after `--`")?;
        let label = label(program);
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // snap killed outright (SIGKILL, an uncaught SIGTERM) runs no
        // handler: the kernel then sends the command SIGTERM, or it would
        // go on dumping into a pipe nobody reads. The spawning thread is
        // the main thread, which lives as long as the process.
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, getppid) are made.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // snap died before the prctl: nobody will read the output.
                if libc::getppid() != parent {
                    return Err(io::Error::other("snap ended before the command started"));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {label}"))?;
        // For the interrupt handler, which ends the command with snap.
        STDIN_COMMAND_PID.store(child.id() as i32, Ordering::SeqCst);
        let stdout = child.stdout.take();
        Ok(CommandStream {
            label,
            child: Some(child),
            stdout,
            ended: None,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The output has ended: waits for the command and judges its status.
    fn finish(&mut self) -> std::result::Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Cleared before the wait reaps the process: until then its pid
        // cannot be reused, so the handler can only signal this command.
        STDIN_COMMAND_PID.store(0, Ordering::SeqCst);
        self.stdout = None;
        match child.wait() {
            // Interrupted, snap terminated the command: even a clean exit
            // may have cut its output short.
            Ok(status) if CANCEL.load(Ordering::SeqCst) => Err(format!("{} after the interrupt", describe(status))),
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!(
                "{}, so its output may be incomplete; no snapshot was written",
                describe(status)
            )),
            Err(e) => Err(format!("cannot wait for it: {e}")),
        }
    }
}

impl Read for CommandStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(ended) = &self.ended {
            return match ended {
                Ok(()) => Ok(0),
                Err(why) => Err(io::Error::other(why.clone())),
            };
        }
        let n = match &mut self.stdout {
            Some(stdout) => stdout.read(buf)?,
            None => 0,
        };
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let ended = self.finish();
        self.ended = Some(ended);
        self.read(buf)
    }
}

impl Drop for CommandStream {
    /// The backup ended before the output did (an interrupt, a storage
    /// error): the command is stopped, not left behind blocked on a pipe
    /// nobody reads.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        STDIN_COMMAND_PID.store(0, Ordering::SeqCst);
        self.stdout = None;
        // SIGTERM first: a dump tool may clean up (close its connection).
        // SAFETY: kill only sends a signal to our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => format!("was killed by signal {signal} ({name})"),
            None => format!("was killed by signal {signal}"),
        },
        None => format!("ended with {status}"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
}
