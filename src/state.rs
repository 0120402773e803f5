//! The tool's state directory: where the durable undo journals live (docs/crash-safety.md).
//! One rule, in order: `$FRACTALIC_STATE_DIR` (tests, packagers); `$XDG_STATE_HOME/fractalic-publisher`;
//! `$HOME/.local/state/fractalic-publisher`; with neither HOME nor XDG_STATE_HOME set (a
//! `FROM scratch` container, a bare systemd unit) `$TMPDIR/fractalic-publisher-state-UID`
//! (`/tmp/...`). Relative values are ignored, as the XDG spec says. The directory is made 0700
//! and refused when it belongs to another user or others may write into it.

use crate::error::{Error, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory the rule in the module docs picks (not created here).
pub(crate) fn state_dir() -> PathBuf {
    pick(&|k| std::env::var_os(k))
}

/// [`state_dir`] with the environment read through `var`.
fn pick(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let abs = |k: &str| var(k).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(p) = abs("FRACTALIC_STATE_DIR") {
        return p;
    }
    if let Some(p) = abs("XDG_STATE_HOME") {
        return p.join("fractalic-publisher");
    }
    if let Some(h) = abs("HOME") {
        return h.join(".local").join("state").join("fractalic-publisher");
    }
    std::env::temp_dir().join(format!("fractalic-publisher-state-{}", euid()))
}

/// This process's effective uid: the owner of `/proc/self` (0 when it cannot be read).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// Creates `dir` (and its parents) if needed, makes it 0700 and checks it is ours; returns it.
pub(crate) fn ensure(dir: &Path) -> Result<PathBuf> {
    let io = |e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent);
        }
    }
    let m = std::fs::symlink_metadata(dir).map_err(io)?;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !m.is_dir() || me.is_some_and(|me| m.uid() != me) {
        return Err(Error::failed(format!(
            "the state directory {} is not a directory of this user; remove it, or set FRACTALIC_STATE_DIR to a directory of yours",
            dir.display()
        )));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(dir.to_path_buf())
}

/// Flushes a directory's entries (a new or removed file in it) to disk; best effort.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_in_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = env(&[
            ("FRACTALIC_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(pick(&all), PathBuf::from("/s"));
        let xdg = env(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(pick(&xdg), PathBuf::from("/x/fractalic-publisher"));
        // Relative values are ignored.
        let home = env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            pick(&home),
            PathBuf::from("/h/.local/state/fractalic-publisher")
        );
        let bare = env(&[("HOME", "")]);
        let p = pick(&bare);
        assert!(p.starts_with(std::env::temp_dir()), "{}", p.display());
        assert!(
            p.to_string_lossy()
                .ends_with(&format!("fractalic-publisher-state-{}", euid())),
            "{}",
            p.display()
        );
    }

    #[test]
    fn ensure_makes_it_0700_and_tightens_a_loose_one() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/state");
        ensure(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A file where the directory should be is refused, naming it.
        let f = t.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let e = ensure(&f).unwrap_err().to_string();
        assert!(e.contains(&f.display().to_string()), "{e}");
    }
}
