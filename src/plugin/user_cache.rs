//! Remembers which uid:gid an image's user name resolves to, keyed by image id, so a deploy
//! does not have to read `/etc/passwd` out of every new container. An image id is the digest
//! of the image config, which names its layers, so the answer for an id can never change.
//! The cache is a best effort: any problem reading or writing it means "look it up again".

use std::io::Write;
use std::path::PathBuf;

/// `image_id user uid:gid` lines in a file under the user's cache directory.
#[derive(Debug, Clone)]
pub(crate) struct UserCache {
    path: PathBuf,
}

impl UserCache {
    /// `$XDG_CACHE_HOME/fractalic-publisher/image-users`, else `~/.cache/...`; None without
    /// either (or when `FRACTALIC_PUBLISHER_NO_CACHE` is set).
    pub(crate) fn default_location() -> Option<UserCache> {
        if std::env::var_os("FRACTALIC_PUBLISHER_NO_CACHE").is_some() {
            return None;
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(UserCache::at(
            base.join("fractalic-publisher").join("image-users"),
        ))
    }

    /// A cache in a given file.
    pub(crate) fn at(path: PathBuf) -> UserCache {
        UserCache { path }
    }

    fn key_ok(s: &str) -> bool {
        !s.is_empty() && !s.chars().any(char::is_whitespace)
    }

    /// The remembered ids of `user` in image `image_id`.
    pub(crate) fn get(&self, image_id: &str, user: &str) -> Option<(u64, u64)> {
        if !Self::key_ok(image_id) || !Self::key_ok(user) {
            return None;
        }
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines().rev().find_map(|line| {
            let mut f = line.split_whitespace();
            if f.next()? != image_id || f.next()? != user {
                return None;
            }
            let (u, g) = f.next()?.split_once(':')?;
            Some((u.parse().ok()?, g.parse().ok()?))
        })
    }

    /// Remembers the ids; errors are ignored (the cache is only an optimisation).
    pub(crate) fn put(&self, image_id: &str, user: &str, ids: (u64, u64)) {
        if !Self::key_ok(image_id) || !Self::key_ok(user) {
            return;
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // One short append is atomic enough for concurrent deploys: a torn line just misses.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "{image_id} {user} {}:{}", ids.0, ids.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_image_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let c = UserCache::at(dir.path().join("sub").join("image-users"));
        assert_eq!(c.get("sha256:a", "appuser"), None);
        c.put("sha256:a", "appuser", (1000, 1000));
        c.put("sha256:b", "appuser", (1001, 50));
        assert_eq!(c.get("sha256:a", "appuser"), Some((1000, 1000)));
        assert_eq!(c.get("sha256:b", "appuser"), Some((1001, 50)));
        assert_eq!(c.get("sha256:a", "root"), None);
        // Keys with spaces are never stored or matched.
        c.put("sha256:a x", "appuser", (1, 1));
        assert_eq!(c.get("sha256:a x", "appuser"), None);
        // A garbled line is skipped, not trusted.
        std::fs::write(
            dir.path().join("sub").join("image-users"),
            "sha256:c appuser 10:x\n",
        )
        .unwrap();
        assert_eq!(c.get("sha256:c", "appuser"), None);
    }
}
