//! The deploy payload: script folder and config files staged as one in-memory tar stream
//! (paths, owner, modes, excludes) for a single `docker cp -a - CONTAINER:/`.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Paths never copied into a deployment. `.git`, `__pycache__` and `*.pyc` are what the
/// original publisher skipped; `.DS_Store`, `node_modules` and `.venv` are local junk that
/// does not belong in a container; `*.ctx`, `*.trc` and `call_tree.json` are artefacts of
/// local Fractalic runs (the deployed run writes its own); `fractalic-publish.toml` is this
/// tool's deployment file, which may hold secrets and is not part of the script.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git",
    "__pycache__",
    "*.pyc",
    ".DS_Store",
    "node_modules",
    ".venv",
    "*.ctx",
    "*.trc",
    "call_tree.json",
    "fractalic-publish.toml",
];

/// File names holding secrets (API keys): stored with mode 0600 wherever they appear.
pub const SECRET_NAMES: &[&str] = &["settings.toml", "mcp_servers.json", ".env"];

/// Tar path of the script folders' parent inside the container root (`/payload`).
const PAYLOAD_DIR: &str = "payload";

/// Compiled payload filters: `include_files` globs (default `["*"]`, everything) and
/// [`DEFAULT_EXCLUDES`] plus the user's `--exclude` patterns. A file is taken when an include
/// pattern matches it and no exclude pattern does; excludes also prune whole directories.
#[derive(Debug, Clone)]
pub struct Excludes {
    patterns: Vec<String>,
    exclude: Globs,
    /// `None`: everything is included (no include patterns, or just `*`).
    include: Option<Globs>,
    include_patterns: Vec<String>,
}

/// One list of patterns, split by how they match.
#[derive(Debug, Clone)]
struct Globs {
    /// Patterns without '/': matched against each path component.
    component: GlobSet,
    /// Patterns with '/': matched against the relative path and each of its directory prefixes.
    path: GlobSet,
}

impl Globs {
    /// `list` ("exclude" or "include") names the list in errors.
    fn compile(patterns: &[String], list: &'static str) -> Result<Globs, PayloadError> {
        let mut component = GlobSetBuilder::new();
        let mut path = GlobSetBuilder::new();
        for pattern in patterns {
            let anchored = pattern.starts_with('/');
            let trimmed = pattern.trim_start_matches('/').trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(PayloadError::BadPattern {
                    list,
                    pattern: pattern.clone(),
                    message: "pattern matches nothing; give a file or directory name or glob"
                        .to_string(),
                });
            }
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| PayloadError::BadPattern {
                    list,
                    pattern: pattern.clone(),
                    message: e.kind().to_string(),
                })?;
            if anchored || trimmed.contains('/') {
                path.add(glob);
            } else {
                component.add(glob);
            }
        }
        let build = |builder: GlobSetBuilder| {
            builder.build().map_err(|e| PayloadError::BadPattern {
                list,
                pattern: e.glob().unwrap_or("").to_string(),
                message: e.kind().to_string(),
            })
        };
        Ok(Globs {
            component: build(component)?,
            path: build(path)?,
        })
    }

    /// See [`Excludes::is_excluded`] for the matching rule.
    fn matches(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return false;
        }
        let mut end = 0;
        for part in rel.split('/') {
            end += part.len();
            if self.component.is_match(part) || self.path.is_match(&rel[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }
}

impl Excludes {
    /// [`DEFAULT_EXCLUDES`] plus `extra` (user `--exclude` patterns). A leading '/' anchors a
    /// pattern at the script folder and a trailing '/' is ignored, as in .gitignore (except that
    /// a trailing '/' does not restrict the match to directories). The error names the bad
    /// pattern.
    pub fn new(extra: &[String]) -> Result<Excludes, PayloadError> {
        Self::with_includes(&[], extra)
    }

    /// Like [`Excludes::new`], keeping only what the `include` patterns (`include_files`, same
    /// syntax) match; an empty list, like `["*"]`, includes everything.
    pub fn with_includes(include: &[String], extra: &[String]) -> Result<Excludes, PayloadError> {
        let mut patterns: Vec<String> = DEFAULT_EXCLUDES.iter().map(|p| p.to_string()).collect();
        patterns.extend(extra.iter().cloned());
        let everything = include.is_empty() || include.iter().all(|p| p == "*");
        let include_globs = Globs::compile(include, "include")?;
        Ok(Excludes {
            exclude: Globs::compile(&patterns, "exclude")?,
            include: (!everything).then_some(include_globs),
            include_patterns: if include.is_empty() {
                vec!["*".to_string()]
            } else {
                include.to_vec()
            },
            patterns,
        })
    }

    /// The source patterns, defaults first, as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The include patterns (`["*"]` when everything is included).
    pub fn include_patterns(&self) -> &[String] {
        &self.include_patterns
    }

    /// `rel` is a path relative to the script folder, '/'-separated. A pattern without '/'
    /// matches any single path component (like .gitignore: "*.pyc" excludes a/b/c.pyc, ".git"
    /// excludes .git and everything under it); a pattern with '/' matches the whole relative
    /// path (e.g. "data/*.csv") or a directory prefix of it.
    pub fn is_excluded(&self, rel: &str) -> bool {
        self.exclude.matches(rel)
    }

    /// Whether an include pattern matches `rel` (same rule as [`Excludes::is_excluded`], so
    /// including a directory includes everything under it).
    pub fn is_included(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.matches(rel))
    }

    /// Whether the file `rel` goes into the payload: included and not excluded.
    pub fn takes(&self, rel: &str) -> bool {
        self.is_included(rel) && !self.is_excluded(rel)
    }
}

/// Numeric owner of every entry in the payload (the image's appuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

/// A generated file placed outside the script folder, e.g. a config file.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Absolute path in the container, e.g. "/fractalic/settings.toml".
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub struct PayloadSpec<'a> {
    /// Already validated: no '/', no "..", a Docker-style name; checked again defensively.
    pub script_name: &'a str,
    pub script_folder: &'a Path,
    pub excludes: &'a Excludes,
    pub owner: Owner,
    /// Config files (settings.toml -> /fractalic/settings.toml and /settings.toml,
    /// mcp_servers.json likewise, .env -> /fractalic/.env); secrets with mode 0o600.
    pub extra_files: Vec<ExtraFile>,
    /// Add the symlink /fractalic/payload -> /payload.
    pub link_fractalic_payload: bool,
}

/// The tar stream (or where it was written) and what it holds from the script folder.
#[derive(Debug)]
pub struct Payload<W = Vec<u8>> {
    /// The whole archive, ready for `docker cp - CONTAINER:/`; or the writer it went to.
    pub tar: W,
    /// Regular files taken from the script folder.
    pub files: usize,
    /// Directories taken from the script folder, not counting the folder itself.
    pub dirs: usize,
    /// Sum of those files' sizes.
    pub bytes: u64,
    /// Symlinks taken from the script folder (stored as links, not followed).
    pub symlinks: usize,
    /// Sockets, FIFOs and devices left out, relative to the script folder ('/'-separated).
    pub skipped_special: Vec<String>,
}

/// Why the payload could not be built.
#[derive(Debug)]
pub enum PayloadError {
    /// An include or exclude pattern (`list`) does not compile.
    BadPattern {
        list: &'static str,
        pattern: String,
        message: String,
    },
    /// Reading a source file or directory (or writing the archive) failed.
    Io { path: PathBuf, source: io::Error },
    /// The script folder is not a directory.
    NotADirectory { path: PathBuf },
    /// The script name would not make a single path component under /payload.
    BadScriptName { name: String },
    /// An extra file's path is not an absolute, `..`-free file path.
    BadExtraPath { path: String },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::BadPattern {
                list,
                pattern,
                message,
            } => write!(
                f,
                "invalid {list} pattern {pattern:?}: {message}; use a glob such as \"*.log\" or \"data/*.csv\""
            ),
            PayloadError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            PayloadError::NotADirectory { path } => write!(
                f,
                "script folder {} is not a directory; give the folder that holds the script",
                path.display()
            ),
            PayloadError::BadScriptName { name } => write!(
                f,
                "script name {name:?} is not a single path component; use letters, digits, '_', '.', '-'"
            ),
            PayloadError::BadExtraPath { path } => write!(
                f,
                "extra file path {path:?} is not an absolute file path without \"..\"; use e.g. \"/fractalic/settings.toml\""
            ),
        }
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PayloadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Builds the tar stream: "payload/<script>/" and everything under the script folder (sorted,
/// excludes applied, the top-level `.env` left out), then the extra files, then the optional
/// "fractalic/payload" -> "/payload" link. Every entry is owned by `spec.owner`; no entries are
/// made for "payload/", "fractalic/" or other parents that exist in the image.
pub fn build(spec: &PayloadSpec) -> Result<Payload, PayloadError> {
    build_into(spec, Vec::new())
}

/// Like [`build`], but writes the archive to `out` as it goes (e.g. straight into the stdin of
/// `docker cp`), so no copy of the payload is held in memory. A write error is
/// [`PayloadError::Io`] naming the script folder.
pub fn build_into<W: io::Write>(spec: &PayloadSpec, out: W) -> Result<Payload<W>, PayloadError> {
    check_script_name(spec.script_name)?;
    let root = spec.script_folder;
    let meta = fs::metadata(root).map_err(|source| PayloadError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PayloadError::NotADirectory {
            path: root.to_path_buf(),
        });
    }

    let mut stager = Stager::new(spec, out);
    let top = Path::new(PAYLOAD_DIR).join(spec.script_name);
    stager.dir(&top, &meta, root)?;
    stager.walk(root, &top, "")?;
    for extra in &spec.extra_files {
        stager.extra(extra)?;
    }
    if spec.link_fractalic_payload {
        let now = stager.now;
        stager.symlink(
            Path::new("fractalic/payload"),
            Path::new("/payload"),
            now,
            root,
        )?;
    }

    let tar = stager
        .builder
        .into_inner()
        .map_err(|source| PayloadError::Io {
            path: root.to_path_buf(),
            source,
        })?;
    Ok(Payload {
        tar,
        files: stager.files,
        dirs: stager.dirs,
        bytes: stager.bytes,
        symlinks: stager.symlinks,
        skipped_special: stager.skipped_special,
    })
}

fn check_script_name(name: &str) -> Result<(), PayloadError> {
    let mut components = Path::new(name).components();
    let single_normal = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    if single_normal && !name.contains(['/', '\\']) {
        Ok(())
    } else {
        Err(PayloadError::BadScriptName {
            name: name.to_string(),
        })
    }
}

/// Archive under construction plus the counts reported in [`Payload`].
struct Stager<'s, 'a, W: io::Write> {
    builder: tar::Builder<W>,
    spec: &'s PayloadSpec<'a>,
    now: u64,
    files: usize,
    dirs: usize,
    bytes: u64,
    symlinks: usize,
    skipped_special: Vec<String>,
    /// Directories walked into but not yet written (tar path, metadata, source).
    pending: Vec<(PathBuf, Metadata, PathBuf)>,
}

impl<'s, 'a, W: io::Write> Stager<'s, 'a, W> {
    fn new(spec: &'s PayloadSpec<'a>, out: W) -> Self {
        Stager {
            builder: tar::Builder::new(out),
            spec,
            now: unix_seconds(SystemTime::now()),
            files: 0,
            dirs: 0,
            bytes: 0,
            symlinks: 0,
            skipped_special: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Adds the contents of `src` (tar path `tar_dir`, relative path `rel`, "" at the top).
    fn walk(&mut self, src: &Path, tar_dir: &Path, rel: &str) -> Result<(), PayloadError> {
        let io_err = |source| PayloadError::Io {
            path: src.to_path_buf(),
            source,
        };
        let mut entries: Vec<(OsString, PathBuf)> = fs::read_dir(src)
            .map_err(io_err)?
            .map(|entry| entry.map(|e| (e.file_name(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(io_err)?;
        entries.sort_unstable();

        for (name, path) in entries {
            let name_str = name.to_string_lossy();
            let child_rel = if rel.is_empty() {
                name_str.to_string()
            } else {
                format!("{rel}/{name_str}")
            };
            if self.spec.excludes.is_excluded(&child_rel) || child_rel == ".env" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).map_err(|source| PayloadError::Io {
                path: path.clone(),
                source,
            })?;
            let tar_path = tar_dir.join(&name);
            let kind = meta.file_type();
            if kind.is_dir() {
                // Entered lazily: a directory none of whose contents include_files takes stays
                // out (with everything included, each one is written at once, as before).
                let depth = self.pending.len();
                self.pending.push((tar_path.clone(), meta, path.clone()));
                if self.spec.excludes.is_included(&child_rel) {
                    self.flush_dirs()?;
                }
                self.walk(&path, &tar_path, &child_rel)?;
                self.pending.truncate(depth);
            } else if !self.take(&child_rel)? {
                // Not matched by include_files.
            } else if kind.is_file() {
                let secret = SECRET_NAMES.contains(&name_str.as_ref());
                self.file(&tar_path, &path, secret)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| PayloadError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.symlink(&tar_path, &target, mtime(&meta), &path)?;
                self.symlinks += 1;
            } else {
                self.skipped_special.push(child_rel);
            }
        }
        Ok(())
    }

    /// Whether include_files takes `rel`; if so, first writes the directories above it.
    fn take(&mut self, rel: &str) -> Result<bool, PayloadError> {
        if !self.spec.excludes.is_included(rel) {
            return Ok(false);
        }
        self.flush_dirs()?;
        Ok(true)
    }

    /// Writes the directory entries still pending, outermost first.
    fn flush_dirs(&mut self) -> Result<(), PayloadError> {
        for (tar_path, meta, src) in std::mem::take(&mut self.pending) {
            self.dir(&tar_path, &meta, &src)?;
            self.dirs += 1;
        }
        Ok(())
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(mtime);
        header.set_uid(self.spec.owner.uid);
        header.set_gid(self.spec.owner.gid);
        header
    }

    /// `src` is only for error messages.
    fn dir(&mut self, tar_path: &Path, meta: &Metadata, src: &Path) -> Result<(), PayloadError> {
        let mut header = self.header(tar::EntryType::Directory, 0o755, 0, mtime(meta));
        // Directory entries conventionally end in '/'.
        let mut with_slash = tar_path.as_os_str().to_owned();
        with_slash.push("/");
        self.builder
            .append_data(&mut header, Path::new(&with_slash), io::empty())
            .map_err(|source| PayloadError::Io {
                path: src.to_path_buf(),
                source,
            })
    }

    fn file(&mut self, tar_path: &Path, src: &Path, secret: bool) -> Result<(), PayloadError> {
        let io_err = |source| PayloadError::Io {
            path: src.to_path_buf(),
            source,
        };
        let file = File::open(src).map_err(io_err)?;
        // Size and mode from the open file, so they describe the bytes actually streamed.
        let meta = file.metadata().map_err(io_err)?;
        let mode = if secret {
            0o600
        } else if owner_executable(&meta) {
            0o755
        } else {
            0o644
        };
        let size = meta.len();
        let mut header = self.header(tar::EntryType::Regular, mode, size, mtime(&meta));
        let reader = ExactReader {
            inner: file.take(size),
            remaining: size,
        };
        self.builder
            .append_data(&mut header, tar_path, reader)
            .map_err(io_err)?;
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// `src` is only for error messages.
    fn symlink(
        &mut self,
        tar_path: &Path,
        target: &Path,
        mtime: u64,
        src: &Path,
    ) -> Result<(), PayloadError> {
        let mut header = self.header(tar::EntryType::Symlink, 0o777, 0, mtime);
        self.builder
            .append_link(&mut header, tar_path, target)
            .map_err(|source| PayloadError::Io {
                path: src.to_path_buf(),
                source,
            })
    }

    fn extra(&mut self, extra: &ExtraFile) -> Result<(), PayloadError> {
        let bad = || PayloadError::BadExtraPath {
            path: extra.path.clone(),
        };
        let path = Path::new(&extra.path);
        if !extra.path.starts_with('/') || extra.path.ends_with('/') {
            return Err(bad());
        }
        let mut rel = PathBuf::new();
        for component in path.components() {
            match component {
                Component::RootDir => {}
                Component::Normal(part) => rel.push(part),
                _ => return Err(bad()),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(bad());
        }
        let mut header = self.header(
            tar::EntryType::Regular,
            extra.mode,
            extra.contents.len() as u64,
            self.now,
        );
        self.builder
            .append_data(&mut header, &rel, extra.contents.as_slice())
            .map_err(|source| PayloadError::Io {
                path: PathBuf::from(&extra.path),
                source,
            })
    }
}

/// Reads exactly `remaining` bytes: a file that shrank while being archived is an error
/// rather than a silently corrupt tar (a grown one is cut at its stat size by `take`).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being archived ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn owner_executable(meta: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn owner_executable(_meta: &Metadata) -> bool {
    false
}

fn mtime(meta: &Metadata) -> u64 {
    meta.modified().map(unix_seconds).unwrap_or(0)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const APPUSER: Owner = Owner {
        uid: 1000,
        gid: 1000,
    };

    /// One archive entry as read back.
    #[derive(Debug)]
    struct Item {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        uname: Vec<u8>,
        link: Option<String>,
        data: Vec<u8>,
    }

    fn entries(tar: &[u8]) -> Vec<Item> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let header = e.header();
                Item {
                    // `path_bytes` keeps a directory's trailing '/'.
                    path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                    uname: header.username_bytes().unwrap_or_default().to_vec(),
                    link: e
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    data,
                }
            })
            .collect()
    }

    fn find<'e>(entries: &'e [Item], path: &str) -> &'e Item {
        entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no entry {path} in {:?}", paths(entries)))
    }

    fn paths(entries: &[Item]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn write(root: &Path, rel: &str, contents: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn spec<'a>(folder: &'a Path, excludes: &'a Excludes) -> PayloadSpec<'a> {
        PayloadSpec {
            script_name: "demo",
            script_folder: folder,
            excludes,
            owner: APPUSER,
            extra_files: Vec::new(),
            link_fractalic_payload: false,
        }
    }

    fn defaults() -> Excludes {
        Excludes::new(&[]).unwrap()
    }

    #[test]
    fn component_patterns_match_anywhere() {
        let ex = defaults();
        assert!(ex.is_excluded(".git"));
        assert!(ex.is_excluded(".git/objects/ab"));
        assert!(ex.is_excluded("a/b/c.pyc"));
        assert!(ex.is_excluded("sub/__pycache__/x.py"));
        assert!(ex.is_excluded("deep/node_modules"));
        assert!(ex.is_excluded("run.ctx"));
        assert!(ex.is_excluded("x/call_tree.json"));
        assert!(!ex.is_excluded("main.md"));
        assert!(!ex.is_excluded("a/gitx/b.py"));
        assert!(!ex.is_excluded("a.pyc.md"));
        assert!(!ex.is_excluded(""));
    }

    #[test]
    fn slash_patterns_match_whole_path_or_prefix() {
        let ex = Excludes::new(&["data/*.csv".to_string(), "/build".to_string()]).unwrap();
        assert!(ex.is_excluded("data/a.csv"));
        assert!(!ex.is_excluded("data/sub/a.csv"));
        assert!(!ex.is_excluded("other/data/a.csv"));
        assert!(ex.is_excluded("build"));
        assert!(ex.is_excluded("build/out/x.bin"));
        assert!(!ex.is_excluded("src/build"));

        let ex = Excludes::new(&["docs/drafts/".to_string()]).unwrap();
        assert!(ex.is_excluded("docs/drafts/a.md"));
        assert!(!ex.is_excluded("docs/final.md"));
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = Excludes::new(&["ok".to_string(), "[abc".to_string()]).unwrap_err();
        match &err {
            PayloadError::BadPattern { pattern, .. } => assert_eq!(pattern, "[abc"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("\"[abc\""), "{err}");
        assert!(matches!(
            Excludes::new(&["/".to_string()]),
            Err(PayloadError::BadPattern { .. })
        ));
    }

    #[test]
    fn patterns_keep_defaults_then_user() {
        let ex = Excludes::new(&["*.log".to_string()]).unwrap();
        assert_eq!(ex.patterns().len(), DEFAULT_EXCLUDES.len() + 1);
        assert_eq!(ex.patterns()[0], ".git");
        assert_eq!(ex.patterns().last().unwrap(), "*.log");
    }

    #[test]
    fn folder_tree_owner_modes_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "# Demo\n");
        write(root, "lib/helper.md", "helper");
        write(root, "run.sh", "#!/bin/sh\n");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.join("main.md"), fs::Permissions::from_mode(0o664)).unwrap();
        symlink("main.md", root.join("alias.md")).unwrap();

        let ex = defaults();
        let payload = build(&spec(root, &ex)).unwrap();
        let es = entries(&payload.tar);
        assert_eq!(
            paths(&es),
            vec![
                "payload/demo/",
                "payload/demo/alias.md",
                "payload/demo/lib/",
                "payload/demo/lib/helper.md",
                "payload/demo/main.md",
                "payload/demo/run.sh",
            ]
        );
        for e in &es {
            assert_eq!((e.uid, e.gid), (1000, 1000), "{}", e.path);
            assert!(e.uname.is_empty(), "{}", e.path);
        }
        let top = find(&es, "payload/demo/");
        assert_eq!((top.kind, top.mode), (tar::EntryType::Directory, 0o755));
        assert_eq!(find(&es, "payload/demo/lib/").mode, 0o755);
        let main = find(&es, "payload/demo/main.md");
        assert_eq!((main.kind, main.mode), (tar::EntryType::Regular, 0o644));
        assert_eq!(main.data, b"# Demo\n");
        assert_eq!(find(&es, "payload/demo/lib/helper.md").data, b"helper");
        assert_eq!(find(&es, "payload/demo/run.sh").mode, 0o755);
        let alias = find(&es, "payload/demo/alias.md");
        assert_eq!(alias.kind, tar::EntryType::Symlink);
        assert_eq!(alias.link.as_deref(), Some("main.md"));

        assert_eq!(payload.files, 3);
        assert_eq!(payload.dirs, 1);
        assert_eq!(payload.symlinks, 1);
        assert_eq!(payload.bytes, 7 + 6 + 10);
        assert!(payload.skipped_special.is_empty());
    }

    #[test]
    fn mtime_comes_from_the_source_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.md", "a");
        let file = File::options()
            .write(true)
            .open(dir.path().join("a.md"))
            .unwrap();
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        drop(file);
        let ex = defaults();
        let payload = build(&spec(dir.path(), &ex)).unwrap();
        let mut archive = tar::Archive::new(payload.tar.as_slice());
        let mtimes: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(mtimes[1], ("payload/demo/a.md".to_string(), 1_000_000));
        assert!(mtimes[0].1 > 1_000_000);
    }

    #[test]
    fn excludes_defaults_user_dirs_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "m");
        write(root, ".git/HEAD", "ref");
        write(root, "pkg/__pycache__/x.cpython.pyc", "c");
        write(root, "pkg/mod.py", "p");
        write(root, "pkg/mod.pyc", "c");
        write(root, "run.ctx", "ctx");
        write(root, "call_tree.json", "{}");
        write(root, "logs/a.log", "l");
        write(root, "data/a.csv", "1");
        write(root, "data/keep.txt", "k");
        write(root, "app.log", "l");

        let ex = Excludes::new(&[
            "logs".to_string(),
            "data/*.csv".to_string(),
            "*.log".to_string(),
        ])
        .unwrap();
        let payload = build(&spec(root, &ex)).unwrap();
        let es = entries(&payload.tar);
        assert_eq!(
            paths(&es),
            vec![
                "payload/demo/",
                "payload/demo/data/",
                "payload/demo/data/keep.txt",
                "payload/demo/main.md",
                "payload/demo/pkg/",
                "payload/demo/pkg/mod.py",
            ]
        );
        assert_eq!((payload.files, payload.dirs), (3, 2));
    }

    #[test]
    fn include_files_select_before_excludes_and_skip_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "m");
        write(root, "notes.txt", "n");
        write(root, "lib/helper.md", "h");
        write(root, "lib/data.csv", "1");
        write(root, "lib/draft.md", "d");
        write(root, "data/a.csv", "1");
        write(root, "assets/logo.png", "p");
        write(root, "assets/sub/icon.png", "p");
        fs::create_dir_all(root.join("empty")).unwrap();
        symlink("main.md", root.join("alias.md")).unwrap();

        let ex = Excludes::with_includes(
            &["*.md".to_string(), "assets".to_string()],
            &["draft.md".to_string()],
        )
        .unwrap();
        assert!(ex.takes("main.md") && ex.takes("lib/helper.md"));
        assert!(!ex.takes("notes.txt") && !ex.takes("lib/draft.md"));
        let payload = build(&spec(root, &ex)).unwrap();
        let es = entries(&payload.tar);
        assert_eq!(
            paths(&es),
            vec![
                "payload/demo/",
                "payload/demo/alias.md",
                "payload/demo/assets/",
                "payload/demo/assets/logo.png",
                "payload/demo/assets/sub/",
                "payload/demo/assets/sub/icon.png",
                "payload/demo/lib/",
                "payload/demo/lib/helper.md",
                "payload/demo/main.md",
            ]
        );
        assert_eq!((payload.files, payload.dirs, payload.symlinks), (4, 3, 1));
        assert_eq!(ex.include_patterns(), ["*.md", "assets"]);

        // The default includes everything, empty directories too.
        let all = Excludes::with_includes(&["*".to_string()], &[]).unwrap();
        let es = entries(&build(&spec(root, &all)).unwrap().tar);
        assert!(
            paths(&es).contains(&"payload/demo/empty/"),
            "{:?}",
            paths(&es)
        );
        assert!(paths(&es).contains(&"payload/demo/notes.txt"));
        assert_eq!(defaults().include_patterns(), ["*"]);

        // Slash patterns match paths: "data/*.csv" takes data/a.csv only.
        let ex = Excludes::with_includes(&["main.md".into(), "data/*.csv".into()], &[]).unwrap();
        let es = entries(&build(&spec(root, &ex)).unwrap().tar);
        assert_eq!(
            paths(&es),
            vec![
                "payload/demo/",
                "payload/demo/data/",
                "payload/demo/data/a.csv",
                "payload/demo/main.md"
            ]
        );
    }

    #[test]
    fn bad_include_pattern_is_named_as_include() {
        let err = Excludes::with_includes(&["[x".to_string()], &[]).unwrap_err();
        assert!(
            err.to_string().contains("invalid include pattern \"[x\""),
            "{err}"
        );
        let err = Excludes::with_includes(&[], &["[y".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("invalid exclude pattern \"[y\""),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_private_and_top_level_env_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "m");
        write(root, ".env", "KEY=top");
        write(root, "settings.toml", "apiKey = 'x'");
        write(root, "mcp_servers.json", "{}");
        write(root, "sub/.env", "KEY=sub");
        write(root, "sub/settings.toml", "s");
        fs::set_permissions(
            root.join("settings.toml"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        let ex = defaults();
        let payload = build(&spec(root, &ex)).unwrap();
        let es = entries(&payload.tar);
        assert!(
            !paths(&es).contains(&"payload/demo/.env"),
            "{:?}",
            paths(&es)
        );
        for secret in [
            "payload/demo/settings.toml",
            "payload/demo/mcp_servers.json",
            "payload/demo/sub/.env",
            "payload/demo/sub/settings.toml",
        ] {
            assert_eq!(find(&es, secret).mode, 0o600, "{secret}");
        }
        assert_eq!(find(&es, "payload/demo/main.md").mode, 0o644);
        assert_eq!(payload.files, 5);
    }

    #[test]
    fn extra_files_and_link_without_parent_entries() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "main.md", "m");
        let ex = defaults();
        let mut s = spec(dir.path(), &ex);
        s.extra_files = vec![
            ExtraFile {
                path: "/fractalic/settings.toml".to_string(),
                contents: b"defaultProvider = 'x'".to_vec(),
                mode: 0o600,
            },
            ExtraFile {
                path: "/settings.toml".to_string(),
                contents: b"defaultProvider = 'x'".to_vec(),
                mode: 0o600,
            },
            ExtraFile {
                path: "/fractalic/mcp_servers.json".to_string(),
                contents: b"{}".to_vec(),
                mode: 0o644,
            },
        ];
        s.link_fractalic_payload = true;
        let payload = build(&s).unwrap();
        let es = entries(&payload.tar);
        assert_eq!(
            paths(&es),
            vec![
                "payload/demo/",
                "payload/demo/main.md",
                "fractalic/settings.toml",
                "settings.toml",
                "fractalic/mcp_servers.json",
                "fractalic/payload",
            ]
        );
        let settings = find(&es, "fractalic/settings.toml");
        assert_eq!(settings.mode, 0o600);
        assert_eq!(settings.data, b"defaultProvider = 'x'");
        assert_eq!((settings.uid, settings.gid), (1000, 1000));
        assert_eq!(find(&es, "fractalic/mcp_servers.json").mode, 0o644);
        let link = find(&es, "fractalic/payload");
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some("/payload"));
        assert_eq!((link.uid, link.gid), (1000, 1000));
        // Extra files are not counted as script-folder files.
        assert_eq!(payload.files, 1);
    }

    #[test]
    fn bad_extra_paths_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ex = defaults();
        for bad in ["relative.toml", "/", "/fractalic/../etc/passwd", "/dir/"] {
            let mut s = spec(dir.path(), &ex);
            s.extra_files = vec![ExtraFile {
                path: bad.to_string(),
                contents: Vec::new(),
                mode: 0o644,
            }];
            match build(&s) {
                Err(PayloadError::BadExtraPath { path }) => assert_eq!(path, bad),
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn bad_script_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ex = defaults();
        for bad in ["", "..", ".", "a/b", "/abs"] {
            let mut s = spec(dir.path(), &ex);
            s.script_name = bad;
            assert!(
                matches!(build(&s), Err(PayloadError::BadScriptName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn long_paths_survive() {
        let dir = tempfile::tempdir().unwrap();
        let long_dir = "d".repeat(60);
        let long_file = format!("{}.md", "f".repeat(80));
        let rel = format!("{long_dir}/{long_file}");
        write(dir.path(), &rel, "long");
        let target = "t".repeat(120);
        symlink(&target, dir.path().join("link")).unwrap();
        let ex = defaults();
        let payload = build(&spec(dir.path(), &ex)).unwrap();
        let es = entries(&payload.tar);
        let full = format!("payload/demo/{rel}");
        assert!(full.len() > 150);
        assert_eq!(find(&es, &full).data, b"long");
        assert_eq!(
            find(&es, "payload/demo/link").link.as_deref(),
            Some(target.as_str())
        );
    }

    #[test]
    fn many_files_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..20 {
            for f in 0..100 {
                write(dir.path(), &format!("d{d:02}/f{f:03}.md"), "xy");
            }
        }
        let ex = defaults();
        let payload = build(&spec(dir.path(), &ex)).unwrap();
        assert_eq!(payload.files, 2000);
        assert_eq!(payload.dirs, 20);
        assert_eq!(payload.bytes, 4000);
        let es = entries(&payload.tar);
        assert_eq!(es.len(), 1 + 20 + 2000);
        // Sorted walk: deterministic order.
        assert_eq!(es[1].path, "payload/demo/d00/");
        assert_eq!(es[2].path, "payload/demo/d00/f000.md");
        assert_eq!(es.last().unwrap().path, "payload/demo/d19/f099.md");
        assert_eq!(build(&spec(dir.path(), &ex)).unwrap().tar, payload.tar);
    }

    #[test]
    fn special_files_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "main.md", "m");
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let ex = defaults();
        let payload = build(&spec(dir.path(), &ex)).unwrap();
        let es = entries(&payload.tar);
        assert_eq!(paths(&es), vec!["payload/demo/", "payload/demo/main.md"]);
        assert_eq!(payload.skipped_special, vec!["sock".to_string()]);
    }

    #[test]
    fn unreadable_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secret.md", "s");
        let path = dir.path().join("secret.md");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&path).is_ok() {
            // Running as root: permissions do not stop reading, nothing to test here.
            return;
        }
        let ex = defaults();
        match build(&spec(dir.path(), &ex)) {
            Err(PayloadError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn file_that_cannot_be_opened_names_its_path() {
        // Works as root too, where permission bits do not stop reading.
        let dir = tempfile::tempdir().unwrap();
        let ex = defaults();
        let s = spec(dir.path(), &ex);
        let mut stager = Stager::new(&s, Vec::new());
        let gone = dir.path().join("vanished.md");
        match stager.file(Path::new("payload/demo/vanished.md"), &gone, false) {
            Err(PayloadError::Io { path, source }) => {
                assert_eq!(path, gone);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(stager.files, 0);
    }

    #[test]
    fn missing_or_file_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "file.md", "x");
        let ex = defaults();
        let file = dir.path().join("file.md");
        assert!(matches!(
            build(&spec(&file, &ex)),
            Err(PayloadError::NotADirectory { .. })
        ));
        let missing = dir.path().join("missing");
        match build(&spec(&missing, &ex)) {
            Err(PayloadError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn shrunk_file_is_an_error_not_a_short_entry() {
        let mut reader = ExactReader {
            inner: io::Read::take(&b"abc"[..], 5),
            remaining: 5,
        };
        let mut out = Vec::new();
        let err = io::copy(&mut reader, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
