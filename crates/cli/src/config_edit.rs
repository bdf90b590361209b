//! Edits of the config file from `snap ui`: keys of a profile's
//! `schedule` and `retention` tables, written back with toml_edit so every
//! other key, comment and the layout stay as the user wrote them. The new
//! text is checked by the loader itself ([`Config::load`], then the
//! daemon's job list, as `snap config check` and a reload do) before it
//! replaces the file, so an edit the daemon would refuse never reaches it.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

use crate::profile::Config;

/// One key of a profile's sub-table.
pub struct Change {
    /// `schedule` or `retention`.
    pub table: &'static str,
    pub key: String,
    /// None removes the key.
    pub value: Option<Value>,
    /// Set by the user; the others are written only where a whole table
    /// must be (see [`apply`]).
    pub changed: bool,
}

/// One edit at a time: each reads the file, edits and replaces it.
static EDITING: Mutex<()> = Mutex::new(());

/// Applies `changes` to profile `profile` of the config file at `path`,
/// checks the result with the loader and `check`, and replaces the file
/// (atomically, with its mode). An error changes nothing and says why.
///
/// A profile's `retention` replaces its parent's whole (profile.rs
/// `merge`): a profile that inherits its policy and gets its first own
/// `retention` table gets every key of the policy it had, not only the
/// changed one, so the keys it inherited are not lost.
pub fn apply(
    path: &Path,
    profile: &str,
    changes: &[Change],
    check: impl FnOnce(&Config) -> Result<(), String>,
) -> Result<(), String> {
    let _one = EDITING.lock().unwrap_or_else(|e| e.into_inner());
    // Through a symlink, the file it points to is the one to replace.
    let path = std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: not TOML ({e})", path.display()))?;
    edit(&mut doc, profile, changes)?;
    let mode = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read the mode of {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let tmp = temporary(&path);
    let result = write_checked(&path, &tmp, mode, &doc.to_string(), check);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn edit(doc: &mut DocumentMut, profile: &str, changes: &[Change]) -> Result<(), String> {
    let missing = || format!("profile {profile:?} has no table of its own in the config file");
    let profiles = doc
        .get_mut("profile")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(missing)?;
    let inline = matches!(profiles.get(profile), Some(Item::Value(_)));
    let own = profiles
        .get_mut(profile)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(missing)?;
    for table in ["schedule", "retention"] {
        let mine: Vec<&Change> = changes.iter().filter(|c| c.table == table).collect();
        if !mine.iter().any(|c| c.changed) {
            continue;
        }
        let exists = own.get(table).is_some_and(Item::is_table_like);
        if !exists {
            if own.get(table).is_some() {
                return Err(format!("profile {profile:?}: `{table}` is not a table"));
            }
            own.insert(
                table,
                if inline {
                    Item::Value(Value::InlineTable(Default::default()))
                } else {
                    Item::Table(Table::new())
                },
            );
        }
        let whole = !exists && table == "retention";
        let sub = own
            .get_mut(table)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(missing)?;
        for change in mine.into_iter().filter(|c| c.changed || whole) {
            match &change.value {
                None => {
                    sub.remove(&change.key);
                }
                Some(value) => set(sub, &change.key, value.clone()),
            }
        }
        // An empty `[retention]` would still make the daemon run `forget`
        // (with no policy); an empty table is no setting at all.
        if sub.is_empty() {
            own.remove(table);
        }
    }
    Ok(())
}

/// Sets `key`, keeping the old value's surrounding whitespace and comment.
fn set(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => {
            table.insert(key, Item::Value(value));
        }
    }
}

fn temporary(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.snap-ui.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn write_checked(
    path: &Path,
    tmp: &Path,
    mode: u32,
    text: &str,
    check: impl FnOnce(&Config) -> Result<(), String>,
) -> Result<(), String> {
    use std::io::Write;
    let io = |e: std::io::Error| format!("cannot write {}: {e}", tmp.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io)?;
    // The umask may have narrowed the mode: the copy gets the original's.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    let config = Config::load(tmp).map_err(|e| unlocated(&format!("{e:#}"), tmp))?;
    crate::cmd::daemon::jobs(&config).map_err(|e| unlocated(&format!("{e:#}"), tmp))?;
    check(&config)?;
    std::fs::rename(tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        // The rename itself survives a crash once the directory is synced.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The loader's message about the temporary copy, without its name, line
/// and column (of a text the user never saw): the dotted key stays.
fn unlocated(message: &str, tmp: &Path) -> String {
    let name = tmp.display().to_string();
    let Some(rest) = message.strip_prefix(&name) else {
        return message.replace(&name, "the edited config");
    };
    let mut rest = rest.trim_start_matches(':');
    for _ in 0..2 {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(':') {
            rest = &rest[digits + 1..];
        }
    }
    rest.trim_start().replace(&name, "the edited config")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(table: &'static str, key: &str, value: Option<Value>) -> Change {
        Change {
            table,
            key: key.into(),
            value,
            changed: true,
        }
    }

    #[test]
    fn keeps_comments_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = "# my config\n[profile.a]\nrepository = \"/r\"  # where\n\n[profile.a.schedule]\nbackup = \"every 1h\"   # hourly\nrun-missed = true\n\n[profile.b]\nrepository = \"/s\"\nretention.keep-daily = 7\n";
        std::fs::write(&path, text).unwrap();
        apply(
            &path,
            "a",
            &[
                change("schedule", "backup", Some("0 2 * * *".into())),
                change("retention", "keep-last", Some(5.into())),
            ],
            |_| Ok(()),
        )
        .unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("backup = \"0 2 * * *\"   # hourly\n"), "{new}");
        assert!(
            new.starts_with("# my config\n[profile.a]\nrepository = \"/r\"  # where\n"),
            "{new}"
        );
        assert!(new.contains("run-missed = true"), "{new}");
        assert!(new.contains("keep-last = 5"), "{new}");
        assert!(new.contains("retention.keep-daily = 7"), "{new}");
        let config = Config::load(&path).unwrap();
        let a = config.profile("a").unwrap();
        assert_eq!(a.schedule.as_ref().unwrap().backup.as_deref(), Some("0 2 * * *"));

        // Dotted keys stay dotted; removing the last key removes the table.
        apply(&path, "b", &[change("retention", "keep-daily", None)], |_| Ok(())).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(!new.contains("keep-daily"), "{new}");
        assert!(Config::load(&path).unwrap().profile("b").unwrap().retention.is_none());
    }

    #[test]
    fn refuses_what_the_loader_refuses_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = "[profile.a]\nrepository = \"/r\"\n";
        std::fs::write(&path, text).unwrap();
        for (table, key, value, wanted) in [
            ("schedule", "backup", Value::from("every 0s"), "at least 1s"),
            ("schedule", "verify", Value::from("0 0 31 2 *"), "never fires"),
            ("retention", "keep-last", Value::from(-1), "expected a count"),
            (
                "retention",
                "keep-within",
                Value::from("soon"),
                "profile.a.retention.keep-within",
            ),
        ] {
            let message = apply(&path, "a", &[change(table, key, Some(value))], |_| Ok(())).unwrap_err();
            assert!(message.contains(wanted), "{message}");
            assert!(!message.contains(".tmp"), "{message}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file was left"
        );
    }
}
