//! What snap writes for people: standard output that ends quietly when its
//! reader goes away (`snap ls latest | head`), the one style of warnings and
//! errors on stderr (`warning: ...`, coloured only on a terminal), and the
//! escaping of file names for a terminal.
//!
//! Every write to stdout goes through [`outln!`] or [`Stdout`], every write
//! to stderr through [`errln!`] (or the progress bar): `println!` and
//! `eprintln!` panic on a closed pipe, so clippy's `print_stdout` and
//! `print_stderr` lints forbid them.

use std::fmt;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Writes one line to stdout, as `println!` but returning an error (see [`Stdout`]).
macro_rules! outln {
    () => {
        $crate::term::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::term::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes one line to stderr, as `eprintln!` but never panicking: with
/// stderr a closed pipe (`snap verify 2>&1 | head`) there is nowhere left to
/// report to, and the command goes on.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::term::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The reader of stdout went away (EPIPE). Not a failure of snap: `main`
/// ends quietly, as `ls` does.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Stdout whose broken-pipe error carries [`StdoutClosed`], so `main` can
/// tell it from a broken pipe elsewhere (storage, a password command).
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Self {
        Stdout(io::stdout().lock())
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

/// What [`outln!`] calls.
pub fn out(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = Stdout::lock();
    stdout.write_fmt(args)?;
    stdout.flush()
}

/// What [`errln!`] calls. Errors are ignored: see there.
pub fn err(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Whether an error is, anywhere in its chain, a closed stdout.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Ends snap after its reader closed stdout, the way `ls` ends: killed by
/// SIGPIPE (status 141 in a shell), with nothing on stderr. Rust ignores
/// SIGPIPE so that writes fail instead; restore the default and raise it.
pub fn exit_stdout_closed() -> ! {
    // SAFETY: signal and raise have no memory-safety preconditions; every
    // lock and temporary file was released when the command returned.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Colour on stderr: only on a terminal, never with `NO_COLOR` set
/// (<https://no-color.org>) or `TERM=dumb`.
pub fn stderr_colour() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// `warning:`, `error:`, ... for a line on stderr, in bold colour on a terminal.
pub fn label(kind: &str) -> String {
    if !stderr_colour() {
        return format!("{kind}:");
    }
    let colour = match kind {
        "error" => "31",
        "warning" => "33",
        _ => "36",
    };
    format!("\x1b[1;{colour}m{kind}\x1b[0m:")
}

/// Log events (`tracing::warn!` in snap-core and here) in the same style as
/// every other message: `warning: cannot refresh the repository lock: ...`.
pub struct LogFormat;

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let kind = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "{} ", label(kind))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A file name for a terminal, quoted as GNU `ls` does by default there
/// (`--quoting-style=shell-escape`): plain when nothing in it is special;
/// otherwise in single quotes, with control characters and bytes that are not
/// UTF-8 as `$'\n'`, `$'\033'`, `$'\377'`. A name can then neither break a
/// line nor send escape sequences to the terminal, and pasting it into a
/// shell gives the name back.
pub fn shell_escape(name: &[u8]) -> String {
    let plain = |c: char| c.is_alphanumeric() || "%+,-./:=@_^".contains(c);
    let valid = std::str::from_utf8(name).ok();
    if let Some(text) = valid {
        if !text.is_empty() && text.chars().all(plain) {
            return text.to_string();
        }
    }
    // Runs of plain characters go in '...', of escapes in $'...'; a quote
    // stands alone as \'. Adjacent runs of one kind share their quotes.
    #[derive(PartialEq)]
    enum Run {
        None,
        Quoted,
        Escaped,
    }
    let mut out = String::new();
    let mut run = Run::None;
    let mut switch = |out: &mut String, want: Run| {
        if run == want {
            return;
        }
        if run != Run::None {
            out.push('\'');
        }
        match want {
            Run::None => {}
            Run::Quoted => out.push('\''),
            Run::Escaped => out.push_str("$'"),
        }
        run = want;
    };
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\'' {
                switch(&mut out, Run::None);
                out.push_str("\\'");
            } else if c.is_control() || invisible(c) {
                switch(&mut out, Run::Escaped);
                push_escape(&mut out, c);
            } else {
                switch(&mut out, Run::Quoted);
                out.push(c);
            }
        }
        if !chunk.invalid().is_empty() {
            switch(&mut out, Run::Escaped);
            for b in chunk.invalid() {
                out.push_str(&format!("\\{b:03o}"));
            }
        }
    }
    switch(&mut out, Run::None);
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

/// Free text that came from a snapshot or a source tree (a host name, a tag,
/// a path inside a message) with its control and invisible characters
/// written as C escapes (`\n`, `\033`), as `ls -b` does: such text can then
/// neither fake a line of output nor send escape sequences to the terminal.
/// `--json` output keeps the exact text.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || invisible(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() || invisible(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Characters that are not control characters but change how a terminal
/// shows what follows: bidirectional overrides and isolates, zero-width ones.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0b' => out.push_str("\\v"),
        '\x0c' => out.push_str("\\f"),
        _ => {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell_escape;

    #[test]
    fn plain_names_stay_plain() {
        assert_eq!(shell_escape(b"/home/a/notes-2024.txt"), "/home/a/notes-2024.txt");
        assert_eq!(shell_escape("/tmp/caf\u{e9}".as_bytes()), "/tmp/caf\u{e9}");
    }

    #[test]
    fn special_names_are_quoted_for_a_shell() {
        assert_eq!(shell_escape(b"/a/b c"), "'/a/b c'");
        assert_eq!(shell_escape(b"/a/it's"), "'/a/it'\\''s'");
        assert_eq!(shell_escape(b"/a/x\ny"), "'/a/x'$'\\n''y'");
        assert_eq!(shell_escape(b"/a/\x1b[31mred"), "'/a/'$'\\033''[31mred'");
        assert_eq!(shell_escape(b"/a/\xff\xfe"), "'/a/'$'\\377\\376'");
        assert_eq!(shell_escape(b"\x7f"), "$'\\177'");
        assert_eq!(shell_escape(b""), "''");
        assert_eq!(shell_escape("a\u{202e}b".as_bytes()), "'a'$'\\342\\200\\256''b'");
    }

    #[test]
    fn printable_text_escapes_only_what_a_terminal_would_act_on() {
        use super::printable;
        assert_eq!(printable("host a, tags [x y]"), "host a, tags [x y]");
        assert_eq!(printable("a\nb\x1b[2Jc\u{202e}"), "a\\nb\\033[2Jc\\342\\200\\256");
    }

    /// A shell given the escaped name gives back the name's bytes.
    #[test]
    fn a_shell_reads_the_name_back() {
        let every_byte: Vec<u8> = (1u8..=255).collect();
        let names: [&[u8]; 5] = [
            b"/a/it's \"x\" $HOME `y`",
            b"\n\t\x1b[0m",
            b"\xff\xfeok",
            "\u{202e}\u{e9}".as_bytes(),
            &every_byte,
        ];
        for name in names {
            let script = format!("printf %s {}", shell_escape(name));
            let out = match std::process::Command::new("bash").args(["-c", &script]).output() {
                Ok(out) => out,
                Err(e) => {
                    errln!("note: no bash ({e}); skipped");
                    return;
                }
            };
            assert_eq!(out.stdout, name, "{script:?}");
        }
    }

    #[test]
    fn no_escaped_name_holds_a_control_byte() {
        for b in 0u8..=255 {
            let name = [b'/', b'x', b, b'y'];
            let escaped = shell_escape(&name);
            assert!(!escaped.bytes().any(|c| c < 0x20 || c == 0x7f), "{b}: {escaped:?}");
        }
    }
}
