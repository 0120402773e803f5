//! The deploy payload: script folder and config files staged as one in-memory tar stream
//! (paths, owner, modes, excludes) for a single `docker cp -a - CONTAINER:/`.

use std::collections::BTreeMap;
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
pub(crate) const DEFAULT_EXCLUDES: &[&str] = &[
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
pub(crate) const SECRET_NAMES: &[&str] = &["settings.toml", "mcp_servers.json", ".env"];

/// Tar path of the script folders' parent inside the container root (`/payload`).
const PAYLOAD_DIR: &str = "payload";
/// Releases of the payload under /payload (see [`PayloadSpec::release_dir`]).
const RELEASES_DIR: &str = ".releases";

/// Compiled payload filters: `include_files` globs (default `["*"]`, everything) and
/// [`DEFAULT_EXCLUDES`] plus the user's `--exclude` patterns. A file is taken when an include
/// pattern matches it and no exclude pattern does; excludes also prune whole directories.
#[derive(Debug, Clone)]
pub(crate) struct Excludes {
    patterns: Vec<String>,
    /// Patterns without '/': matched against each path component.
    component: GlobSet,
    /// The source pattern of each glob in `component`, by index.
    component_src: Vec<String>,
    /// Patterns with '/': matched against the relative path and each of its directory prefixes.
    path: GlobSet,
    /// The source pattern of each glob in `path`, by index.
    path_src: Vec<String>,
    /// `None`: everything is included (no include patterns, or just `*`).
    include: Option<(GlobSet, GlobSet)>,
    include_patterns: Vec<String>,
}

/// Compiled globs of one list: (component, its sources, path, its sources).
type Compiled = (GlobSet, Vec<String>, GlobSet, Vec<String>);

/// Compiles `patterns`; `list` ("exclude" or "include") names the list in errors.
fn compile(patterns: &[String], list: &'static str) -> Result<Compiled, PayloadError> {
    let mut component = GlobSetBuilder::new();
    let mut path = GlobSetBuilder::new();
    let (mut component_src, mut path_src) = (Vec::new(), Vec::new());
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
            path_src.push(pattern.clone());
        } else {
            component.add(glob);
            component_src.push(pattern.clone());
        }
    }
    let build = |builder: GlobSetBuilder| {
        builder.build().map_err(|e| PayloadError::BadPattern {
            list,
            pattern: e.glob().unwrap_or("").to_string(),
            message: e.kind().to_string(),
        })
    };
    Ok((build(component)?, component_src, build(path)?, path_src))
}

/// The matching rule of [`Excludes::is_excluded`] for one pair of glob sets.
fn matches(component: &GlobSet, path: &GlobSet, rel: &str) -> bool {
    let rel = rel.trim_matches('/');
    if rel.is_empty() {
        return false;
    }
    let mut end = 0;
    for part in rel.split('/') {
        end += part.len();
        if component.is_match(part) || path.is_match(&rel[..end]) {
            return true;
        }
        end += 1;
    }
    false
}

impl Excludes {
    /// [`DEFAULT_EXCLUDES`] plus `extra` (user `--exclude` patterns). A leading '/' anchors a
    /// pattern at the script folder and a trailing '/' is ignored, as in .gitignore (except that
    /// a trailing '/' does not restrict the match to directories). The error names the bad
    /// pattern.
    pub(crate) fn new(extra: &[String]) -> Result<Excludes, PayloadError> {
        Self::with_includes(&[], extra)
    }

    /// Like [`Excludes::new`], keeping only what the `include` patterns (`include_files`, same
    /// syntax) match; an empty list, like `["*"]`, includes everything.
    pub(crate) fn with_includes(
        include: &[String],
        extra: &[String],
    ) -> Result<Excludes, PayloadError> {
        let mut patterns: Vec<String> = DEFAULT_EXCLUDES.iter().map(|p| p.to_string()).collect();
        patterns.extend(extra.iter().cloned());
        let everything = include.is_empty() || include.iter().all(|p| p == "*");
        let (ic, _, ip, _) = compile(include, "include")?;
        let (component, component_src, path, path_src) = compile(&patterns, "exclude")?;
        Ok(Excludes {
            component,
            component_src,
            path,
            path_src,
            include: (!everything).then_some((ic, ip)),
            include_patterns: if include.is_empty() {
                vec!["*".to_string()]
            } else {
                include.to_vec()
            },
            patterns,
        })
    }

    /// The include patterns (`["*"]` when everything is included).
    pub(crate) fn include_patterns(&self) -> &[String] {
        &self.include_patterns
    }

    /// Whether include patterns restrict the payload (anything but everything).
    pub(crate) fn restricts(&self) -> bool {
        self.include.is_some()
    }

    /// Whether an include pattern matches `rel` (same rule as [`Excludes::is_excluded`], so
    /// including a directory includes everything under it).
    pub(crate) fn is_included(&self, rel: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|(c, p)| matches(c, p, rel))
    }

    /// Whether the file `rel` goes into the payload: included and not excluded.
    pub(crate) fn takes(&self, rel: &str) -> bool {
        self.is_included(rel) && !self.is_excluded(rel)
    }

    /// The source patterns, defaults first, as given.
    pub(crate) fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `rel` is a path relative to the script folder, '/'-separated. A pattern without '/'
    /// matches any single path component (like .gitignore: "*.pyc" excludes a/b/c.pyc, ".git"
    /// excludes .git and everything under it); a pattern with '/' matches the whole relative
    /// path (e.g. "data/*.csv") or a directory prefix of it.
    pub(crate) fn is_excluded(&self, rel: &str) -> bool {
        matches(&self.component, &self.path, rel)
    }

    /// The pattern that excludes `rel` (the first one given, defaults first), if any; for
    /// messages that say why a file is left out.
    pub(crate) fn matching(&self, rel: &str) -> Option<&str> {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return None;
        }
        let mut end = 0;
        for part in rel.split('/') {
            end += part.len();
            let by_component = self.component.matches(part).into_iter().min();
            let by_path = self.path.matches(&rel[..end]).into_iter().min();
            let first = [
                by_component.map(|i| self.component_src[i].as_str()),
                by_path.map(|i| self.path_src[i].as_str()),
            ]
            .into_iter()
            .flatten()
            .min_by_key(|p| self.patterns.iter().position(|q| q == p));
            if first.is_some() {
                return first;
            }
            end += 1;
        }
        None
    }

    /// Whether `pattern` is one of [`DEFAULT_EXCLUDES`] rather than a user's `--exclude`.
    pub(crate) fn is_default(pattern: &str) -> bool {
        DEFAULT_EXCLUDES.contains(&pattern)
    }
}

/// Numeric owner of every entry in the payload (the image's appuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u64,
    pub gid: u64,
}

/// A generated file placed outside the script folder, e.g. a config file.
#[derive(Debug, Clone)]
pub(crate) struct ExtraFile {
    /// Absolute path in the container, e.g. "/fractalic/settings.toml".
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub(crate) struct PayloadSpec<'a> {
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
    /// Stage the folder as the release `/payload/.releases/DIR/` instead of
    /// `/payload/<script>/` (see docs/updates.md); with `link_script`, also the symlink
    /// `/payload/<script> -> .releases/DIR` that makes it the live release.
    pub release_dir: Option<&'a str>,
    /// With `release_dir`: add the `/payload/<script>` symlink.
    pub link_script: bool,
    /// The main script's file name at the top of the folder: staged as a regular file even
    /// when it is a symlink to a file inside the folder (the server must be able to open it).
    pub main_script: Option<&'a str>,
}

/// The tar stream (or where it was written) and what it holds from the script folder.
#[derive(Debug)]
pub(crate) struct Payload<W = Vec<u8>> {
    /// The whole archive, ready for `docker cp - CONTAINER:/`; or the writer it went to.
    pub tar: W,
    /// Regular files taken from the script folder.
    pub files: usize,
    /// Directories taken from the script folder, not counting the folder itself.
    pub dirs: usize,
    /// Sum of those files' sizes.
    pub bytes: u64,
    /// Symlinks taken from the script folder (in-folder links only, stored as links; read by
    /// the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub symlinks: usize,
    /// What was left out and why (special files, dangling links, links leaving the folder;
    /// read by the tests: the warnings are given as each is found).
    #[cfg_attr(not(test), allow(dead_code))]
    pub skipped: Vec<Skipped>,
    /// Whether `spec.main_script` was staged as a regular file.
    pub main_script_staged: bool,
    /// What the release holds, hashed as it streamed: every regular file and symlink under
    /// the top folder (the release folder, or `/payload/<script>/`), by path relative to it,
    /// as `sha256:HEX MODE` (mode in octal) or `link -> TARGET` (the form of
    /// `release::Manifest`).
    pub release_files: BTreeMap<String, String>,
}

/// Something in the script folder that the payload leaves out, apart from the excludes. Each
/// one is worth a warning: the deployed script may expect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// A FIFO, socket or device node (`kind` says which): not content that can be copied.
    Special { rel: String, kind: &'static str },
    /// A symlink whose target does not exist (or that loops).
    Dangling { rel: String, target: String },
    /// A symlink whose target is outside the script folder: never followed and never copied,
    /// since following it could put any host file into the container.
    Outside { rel: String, target: String },
    /// A symlink to something inside the folder that the payload leaves out (an exclude
    /// pattern, the top-level `.env`, or a special file), so it would dangle in the container.
    ToLeftOut { rel: String, target: String },
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug quoting keeps hostile names (tabs, newlines) on one line.
        match self {
            Skipped::Special { rel, kind } => {
                write!(f, "{rel:?} is a {kind}; left out of the payload")
            }
            Skipped::Dangling { rel, target } => write!(
                f,
                "symlink {rel:?} -> {target:?} points at nothing; left out of the payload"
            ),
            Skipped::Outside { rel, target } => write!(
                f,
                "symlink {rel:?} -> {target:?} leaves the script folder; not followed and not copied (copy the file into the folder if the script needs it)"
            ),
            Skipped::ToLeftOut { rel, target } => write!(
                f,
                "symlink {rel:?} -> {target:?} points at a file the payload leaves out; not copied"
            ),
        }
    }
}

/// What a walk of the script folder found, without building anything (for validation).
#[derive(Debug, Default)]
pub(crate) struct Survey {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
}

/// Why the payload could not be built.
#[derive(Debug)]
pub(crate) enum PayloadError {
    /// An include or exclude pattern (`list` says which) does not compile.
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
#[cfg(test)]
pub(crate) fn build(spec: &PayloadSpec) -> Result<Payload, PayloadError> {
    build_into(spec, Vec::new())
}

/// Walks the script folder as [`build`] would, checking that every directory can be listed
/// and every file opened, and reports what would be copied and what left out. Nothing is read
/// beyond that.
pub(crate) fn survey(
    folder: &Path,
    excludes: &Excludes,
    main_script: Option<&str>,
) -> Result<Survey, PayloadError> {
    let plan = plan(folder, excludes, main_script, true)?;
    let mut s = Survey {
        skipped: plan.skipped,
        ..Survey::default()
    };
    for item in &plan.items {
        match &item.what {
            What::Dir { .. } => s.dirs += 1,
            What::File { size, .. } => {
                s.files += 1;
                s.bytes += size;
            }
            What::Link { .. } => s.symlinks += 1,
        }
    }
    Ok(s)
}

/// Like [`build`], but writes the archive to `out` as it goes (e.g. straight into the stdin of
/// `docker cp`), so no copy of the payload is held in memory. A write error is
/// [`PayloadError::Io`] naming the script folder.
pub(crate) fn build_into<W: io::Write>(
    spec: &PayloadSpec,
    out: W,
) -> Result<Payload<W>, PayloadError> {
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
    let plan = plan(root, spec.excludes, spec.main_script, false)?;

    let mut stager = Stager::new(spec, out);
    stager.manifest = spec.release_dir.map(|dir| Manifest {
        dir: dir.to_string(),
        ..Manifest::default()
    });
    let top = match spec.release_dir {
        Some(dir) => {
            let releases = Path::new(PAYLOAD_DIR).join(RELEASES_DIR);
            stager.dir(&releases, mtime(&meta), root)?;
            if spec.link_script {
                let now = stager.now;
                stager.symlink(
                    &Path::new(PAYLOAD_DIR).join(spec.script_name),
                    &Path::new(RELEASES_DIR).join(dir),
                    now,
                    root,
                )?;
            }
            releases.join(dir)
        }
        None => Path::new(PAYLOAD_DIR).join(spec.script_name),
    };
    stager.dir(&top, mtime(&meta), root)?;
    stager.top = top.clone();
    let mut main_script_staged = false;
    for item in &plan.items {
        let tar_path = top.join(&item.rel);
        match &item.what {
            What::Dir { mtime } => {
                stager.dir(&tar_path, *mtime, &item.src)?;
                stager.dirs += 1;
            }
            What::File { secret, .. } => {
                stager.file(&tar_path, &item.src, *secret)?;
                if spec.main_script.is_some_and(|m| Path::new(m) == item.rel) {
                    main_script_staged = true;
                }
            }
            What::Link { target, mtime } => {
                stager.symlink(&tar_path, target, *mtime, &item.src)?;
                stager.symlinks += 1;
            }
        }
    }
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
    // Last, so that its presence in the container proves the whole stream arrived.
    if let Some(m) = stager.manifest.take() {
        let file = ExtraFile {
            path: format!("/{}", manifest_path(&m.dir)),
            contents: m.text.into_bytes(),
            mode: 0o600,
        };
        stager.extra(&file)?;
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
        skipped: plan.skipped,
        main_script_staged,
        release_files: stager.release_files,
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

/// One entry of the script folder that goes into the payload.
struct Item {
    /// Path relative to the script folder (lossless, for the tar path).
    rel: PathBuf,
    /// Where its bytes come from (for a dereferenced main script: the link's target).
    src: PathBuf,
    what: What,
}

enum What {
    Dir { mtime: u64 },
    File { secret: bool, size: u64 },
    Link { target: PathBuf, mtime: u64 },
}

/// The folder's entries in archive order (sorted, parents first) and what is left out.
struct Plan {
    items: Vec<Item>,
    skipped: Vec<Skipped>,
}

/// What becomes of a symlink in the script folder.
enum LinkFate {
    /// Stays a link, with this target (relative, so it resolves the same way in the
    /// container); `file` when it points at a regular file.
    Keep {
        target: PathBuf,
        real: PathBuf,
        file: bool,
    },
    Skip(Skipped),
}

/// Walks `root` (excludes applied, top-level `.env` left out), deciding every entry's fate.
/// With `open_files`, every file is also opened once, so an unreadable one is found now.
fn plan(
    root: &Path,
    excludes: &Excludes,
    main_script: Option<&str>,
    open_files: bool,
) -> Result<Plan, PayloadError> {
    let canon = fs::canonicalize(root).map_err(|source| PayloadError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut plan = Plan {
        items: Vec::new(),
        skipped: Vec::new(),
    };
    let walker = Walker {
        canon: &canon,
        excludes,
        main_script,
        open_files,
    };
    walker.walk(root, Path::new(""), "", 0, &mut plan)?;
    Ok(plan)
}

struct Walker<'w> {
    canon: &'w Path,
    excludes: &'w Excludes,
    main_script: Option<&'w str>,
    open_files: bool,
}

impl Walker<'_> {
    /// Adds the contents of `src` (relative path `rel_path`, '/'-joined `rel`, both "" at the
    /// top; `depth` directories below the folder).
    fn walk(
        &self,
        src: &Path,
        rel_path: &Path,
        rel: &str,
        depth: usize,
        plan: &mut Plan,
    ) -> Result<(), PayloadError> {
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
            if self.excludes.is_excluded(&child_rel) || child_rel == ".env" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).map_err(|source| PayloadError::Io {
                path: path.clone(),
                source,
            })?;
            let child_path = rel_path.join(&name);
            let kind = meta.file_type();
            if kind.is_dir() {
                let before = plan.items.len();
                plan.items.push(Item {
                    rel: child_path.clone(),
                    src: path.clone(),
                    what: What::Dir {
                        mtime: mtime(&meta),
                    },
                });
                self.walk(&path, &child_path, &child_rel, depth + 1, plan)?;
                // With include_files, a directory none of whose contents it takes stays out
                // (unless the directory itself is included).
                if self.excludes.restricts()
                    && plan.items.len() == before + 1
                    && !self.excludes.is_included(&child_rel)
                {
                    plan.items.pop();
                }
            } else if !self.excludes.is_included(&child_rel) {
                // Not matched by include_files.
            } else if kind.is_file() {
                self.check_open(&path, &meta)?;
                let secret = SECRET_NAMES.contains(&name_str.as_ref());
                plan.items.push(Item {
                    rel: child_path,
                    src: path,
                    what: What::File {
                        secret,
                        size: meta.len(),
                    },
                });
            } else if kind.is_symlink() {
                let is_main = depth == 0 && self.main_script == Some(name_str.as_ref());
                match self.link_fate(&path, &child_rel, depth)? {
                    LinkFate::Keep { real, file, .. } if is_main && file => {
                        // The main script is served by opening it: give it the bytes.
                        let real_meta = fs::metadata(&real).map_err(|source| PayloadError::Io {
                            path: real.clone(),
                            source,
                        })?;
                        self.check_open(&real, &real_meta)?;
                        let size = real_meta.len();
                        plan.items.push(Item {
                            rel: child_path,
                            src: real,
                            what: What::File {
                                secret: false,
                                size,
                            },
                        });
                    }
                    LinkFate::Keep { target, .. } => plan.items.push(Item {
                        rel: child_path,
                        src: path,
                        what: What::Link {
                            target,
                            mtime: mtime(&meta),
                        },
                    }),
                    LinkFate::Skip(s) => plan.skipped.push(s),
                }
            } else {
                plan.skipped.push(Skipped::Special {
                    rel: child_rel,
                    kind: special_kind(&meta),
                });
            }
        }
        Ok(())
    }

    /// With `open_files`, opens a file that is not world-readable (only those can fail to
    /// open for lack of permission, ACLs aside; skipping the rest keeps a 10,000-file survey
    /// to one walk).
    fn check_open(&self, path: &Path, meta: &Metadata) -> Result<(), PayloadError> {
        if self.open_files && !world_readable(meta) {
            File::open(path).map_err(|source| PayloadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// Decides a symlink's fate: kept (rewritten relative) when it resolves to something in
    /// the folder that the payload holds; otherwise left out, and why.
    fn link_fate(&self, path: &Path, rel: &str, depth: usize) -> Result<LinkFate, PayloadError> {
        let raw = fs::read_link(path).map_err(|source| PayloadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let target = raw.to_string_lossy().into_owned();
        let rel = rel.to_string();
        let Ok(real) = fs::canonicalize(path) else {
            return Ok(LinkFate::Skip(Skipped::Dangling { rel, target }));
        };
        let Ok(inner) = real.strip_prefix(self.canon) else {
            return Ok(LinkFate::Skip(Skipped::Outside { rel, target }));
        };
        let inner_rel = inner
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let Ok(meta) = fs::metadata(&real) else {
            return Ok(LinkFate::Skip(Skipped::Dangling { rel, target }));
        };
        let kind = meta.file_type();
        let left_out = !inner_rel.is_empty()
            && (self.excludes.is_excluded(&inner_rel)
                || inner_rel == ".env"
                || (kind.is_file() && !self.excludes.is_included(&inner_rel)));
        if left_out || !(kind.is_file() || kind.is_dir()) {
            return Ok(LinkFate::Skip(Skipped::ToLeftOut { rel, target }));
        }
        // Relative from the link's own directory, so it resolves inside /payload/<script>/.
        let mut stored = PathBuf::new();
        for _ in 0..depth {
            stored.push("..");
        }
        stored.push(inner);
        if stored.as_os_str().is_empty() {
            stored.push(".");
        }
        Ok(LinkFate::Keep {
            target: stored,
            real,
            file: kind.is_file(),
        })
    }
}

#[cfg(unix)]
fn world_readable(meta: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o004 != 0
}

#[cfg(not(unix))]
fn world_readable(_meta: &Metadata) -> bool {
    false
}

#[cfg(unix)]
fn special_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device node"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_meta: &Metadata) -> &'static str {
    "special file"
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
    /// The release's manifest, filled as its files are streamed (with a release folder only).
    manifest: Option<Manifest>,
    /// The folder the script folder is staged as (set once it is known).
    top: PathBuf,
    /// See [`Payload::release_files`].
    release_files: BTreeMap<String, String>,
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
            manifest: None,
            top: PathBuf::new(),
            release_files: BTreeMap::new(),
        }
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
    fn dir(&mut self, tar_path: &Path, mtime: u64, src: &Path) -> Result<(), PayloadError> {
        let mut header = self.header(tar::EntryType::Directory, 0o755, 0, mtime);
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
        let mut reader = HashingReader {
            inner: ExactReader {
                inner: file.take(size),
                remaining: size,
            },
            hash: sha2::Sha256::default(),
        };
        self.builder
            .append_data(&mut header, tar_path, &mut reader)
            .map_err(io_err)?;
        let hex = hex_of(reader.hash);
        self.released(tar_path, || format!("sha256:{hex} {mode:o}"));
        if let Some(m) = self.manifest.as_mut() {
            m.add(tar_path, &hex);
        }
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
            })?;
        self.released(tar_path, || format!("link -> {}", target.to_string_lossy()));
        Ok(())
    }

    /// Notes `tar_path` in [`Payload::release_files`] when it is under the top folder.
    fn released(&mut self, tar_path: &Path, entry: impl FnOnce() -> String) {
        if self.top.as_os_str().is_empty() {
            return;
        }
        if let Ok(rel) = tar_path.strip_prefix(&self.top) {
            if !rel.as_os_str().is_empty() {
                let rel = rel.to_string_lossy().into_owned();
                self.release_files.insert(rel, entry());
            }
        }
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
            })?;
        use sha2::Digest;
        let hex = hex_of(sha2::Sha256::new_with_prefix(&extra.contents));
        let mode = extra.mode & 0o777;
        self.released(&rel, || format!("sha256:{hex} {mode:o}"));
        if let Some(m) = self.manifest.as_mut() {
            m.add(&rel, &hex);
        }
        Ok(())
    }
}

/// Where a release's manifest lives in the container: `payload/.releases/DIR.sha256` (a path
/// in the tar, relative to `/`).
pub(crate) fn manifest_path(dir: &str) -> String {
    format!("{PAYLOAD_DIR}/{RELEASES_DIR}/{dir}{MANIFEST_SUFFIX}")
}

/// The file name suffix of a release's manifest beside its folder.
pub(crate) const MANIFEST_SUFFIX: &str = ".sha256";

/// The manifest of a release, in `sha256sum -c` form (the container checks it with the
/// `sha256sum` that busybox and coreutils both have): one `HASH  PATH` line per regular file of
/// the release folder `DIR/` and its config copies `DIR.config/`, paths relative to
/// `/payload/.releases`. A name holding a line break, or that is not UTF-8, cannot be written
/// on a line and is left out (the rest is still checked). The payload appends it as the
/// archive's last entry; docs/updates.md ("In place") says how it is checked.
#[derive(Debug, Default)]
struct Manifest {
    dir: String,
    text: String,
}

impl Manifest {
    /// Adds `tar_path` with its hash (hex) when it belongs to the release.
    fn add(&mut self, tar_path: &Path, hex: &str) {
        let Some(path) = tar_path.to_str() else {
            return;
        };
        let prefix = format!("{PAYLOAD_DIR}/{RELEASES_DIR}/");
        let Some(rel) = path.strip_prefix(&prefix) else {
            return;
        };
        let ours = rel
            .strip_prefix(&self.dir)
            .is_some_and(|r| r.starts_with('/') || r.starts_with(".config/"));
        if !ours || rel.contains(['\n', '\r']) {
            return;
        }
        self.text.push_str(hex);
        self.text.push_str("  ");
        self.text.push_str(rel);
        self.text.push('\n');
    }
}

/// A finished hash in lower-case hex.
fn hex_of(hash: sha2::Sha256) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in hash.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hashes what it reads.
struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
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
            main_script: None,
            release_dir: None,
            link_script: false,
        }
    }

    fn defaults() -> Excludes {
        Excludes::new(&[]).unwrap()
    }

    /// What `release_files` says, streamed, is what the archive holds read back: files with
    /// their hash and mode, links with their target, under the top folder only (not its
    /// config copies, the live link or the parents).
    #[test]
    fn release_files_hashed_on_the_way_match_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "# main\n");
        write(root, "sub/deep/a.txt", "alpha");
        write(root, "run.sh", "#!/bin/sh\n");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("sub/deep/a.txt", root.join("link")).unwrap();
        symlink("main.md", root.join("entry.md")).unwrap();
        let ex = defaults();
        let mut s = spec(root, &ex);
        s.release_dir = Some("r2-x");
        s.link_script = true;
        s.link_fractalic_payload = true;
        s.main_script = Some("entry.md");
        s.extra_files.push(ExtraFile {
            path: "/payload/.releases/r2-x.config/settings.toml".into(),
            contents: b"k = 1".to_vec(),
            mode: 0o600,
        });
        let p = build(&s).unwrap();
        let read_back = crate::release::manifest_of_tar(&p.tar, "payload/.releases/r2-x").unwrap();
        assert_eq!(p.release_files, read_back);
        assert_eq!(
            p.release_files
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["entry.md", "link", "main.md", "run.sh", "sub/deep/a.txt"]
        );
        assert_eq!(p.release_files["link"], "link -> sub/deep/a.txt");
        assert!(
            p.release_files["run.sh"].ends_with(" 755"),
            "{:?}",
            p.release_files
        );
        // The main script is staged as a file, so it is hashed as one.
        assert_eq!(p.release_files["entry.md"], p.release_files["main.md"]);
        assert_eq!(
            p.release_files["main.md"],
            format!("{} 644", crate::release::sha256(b"# main\n"))
        );
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
        assert!(payload.skipped.is_empty());
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
        write(dir.path(), &target, "t");
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
        assert_eq!(
            payload.skipped,
            vec![Skipped::Special {
                rel: "sock".into(),
                kind: "socket"
            }]
        );
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

    #[test]
    fn matching_names_the_pattern_that_excludes() {
        let ex = Excludes::new(&["demo.md".to_string(), "data/*.csv".to_string()]).unwrap();
        assert_eq!(ex.matching("run.ctx"), Some("*.ctx"));
        assert_eq!(ex.matching("sub/.git/HEAD"), Some(".git"));
        assert_eq!(ex.matching("demo.md"), Some("demo.md"));
        assert_eq!(ex.matching("data/a.csv"), Some("data/*.csv"));
        assert_eq!(ex.matching("main.md"), None);
        assert!(Excludes::is_default("*.ctx"));
        assert!(!Excludes::is_default("demo.md"));
    }

    #[test]
    fn symlinks_inside_stay_links_and_the_rest_are_left_out_and_reported() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "host-secret.txt", "secret");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "main.md", "m");
        write(root, "sub/data.txt", "d");
        write(root, "run.ctx", "c");
        write(root, ".env", "K=v");
        // In the folder: relative, absolute, and from a subdirectory.
        symlink("sub/data.txt", root.join("rel-link")).unwrap();
        symlink(root.join("sub/data.txt"), root.join("abs-link")).unwrap();
        symlink(root.join("main.md"), root.join("sub/up-link")).unwrap();
        symlink("sub", root.join("dir-link")).unwrap();
        // Left out: leaving the folder, dangling, to excluded files, to .env.
        symlink(outside.path().join("host-secret.txt"), root.join("leak")).unwrap();
        symlink("/etc/passwd", root.join("sub/leak2")).unwrap();
        symlink("nothing-here", root.join("dangling")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("run.ctx", root.join("to-excluded")).unwrap();
        symlink(".env", root.join("to-env")).unwrap();
        let fifo = root.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");

        let ex = defaults();
        let payload = build(&spec(root, &ex)).unwrap();
        let es = entries(&payload.tar);
        let link = |p: &str| {
            let e = find(&es, p);
            assert_eq!(e.kind, tar::EntryType::Symlink, "{p}");
            e.link.clone().unwrap()
        };
        assert_eq!(link("payload/demo/rel-link"), "sub/data.txt");
        assert_eq!(link("payload/demo/abs-link"), "sub/data.txt");
        assert_eq!(link("payload/demo/sub/up-link"), "../main.md");
        assert_eq!(link("payload/demo/dir-link"), "sub");
        for gone in [
            "leak",
            "sub/leak2",
            "dangling",
            "loop",
            "to-excluded",
            "to-env",
            "pipe",
        ] {
            let p = format!("payload/demo/{gone}");
            assert!(!paths(&es).contains(&p.as_str()), "{p} was copied");
        }
        assert_eq!(payload.symlinks, 4);
        let mut skipped: Vec<String> = payload.skipped.iter().map(|s| s.to_string()).collect();
        skipped.sort();
        let want_parts = [
            ("\"dangling\" -> \"nothing-here\" points at nothing", 1),
            ("\"leak\" -> ", 1),
            ("leaves the script folder; not followed and not copied", 2),
            ("\"loop\" -> \"loop\" points at nothing", 1),
            ("\"pipe\" is a FIFO; left out of the payload", 1),
            (
                "\"to-excluded\" -> \"run.ctx\" points at a file the payload leaves out",
                1,
            ),
            (
                "\"to-env\" -> \".env\" points at a file the payload leaves out",
                1,
            ),
        ];
        for (part, n) in want_parts {
            let found = skipped.iter().filter(|s| s.contains(part)).count();
            assert_eq!(found, n, "{part:?} in {skipped:#?}");
        }
        assert_eq!(payload.skipped.len(), 7, "{skipped:#?}");
        // The host file's contents never reach the archive.
        assert!(!es.iter().any(|e| e.data == b"secret"));

        // The survey sees the same, without building anything.
        let survey = survey(root, &ex, None).unwrap();
        assert_eq!(survey.skipped, payload.skipped);
        assert_eq!(
            (survey.files, survey.dirs, survey.symlinks),
            (payload.files, payload.dirs, payload.symlinks)
        );
    }

    #[test]
    fn a_main_script_symlink_inside_the_folder_is_staged_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "versions/v2.md", "# v2\n");
        symlink("versions/v2.md", root.join("demo.md")).unwrap();
        let ex = defaults();
        let mut s = spec(root, &ex);
        s.main_script = Some("demo.md");
        let payload = build(&s).unwrap();
        let es = entries(&payload.tar);
        let main = find(&es, "payload/demo/demo.md");
        assert_eq!(main.kind, tar::EntryType::Regular);
        assert_eq!(main.data, b"# v2\n");
        assert!(payload.main_script_staged);
        // Without naming it the main script, it stays a link; and a missing one is reported.
        s.main_script = None;
        let payload = build(&s).unwrap();
        assert_eq!(
            find(&entries(&payload.tar), "payload/demo/demo.md").kind,
            tar::EntryType::Symlink
        );
        s.main_script = Some("absent.md");
        assert!(!build(&s).unwrap().main_script_staged);
    }

    #[test]
    fn survey_counts_and_names_an_unlistable_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "main.md", "m");
        write(dir.path(), "sub/a.md", "aa");
        let ex = defaults();
        let s = survey(dir.path(), &ex, Some("main.md")).unwrap();
        assert_eq!((s.files, s.dirs, s.bytes), (2, 1, 3));
        let sub = dir.path().join("sub");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o000)).unwrap();
        let listable = fs::read_dir(&sub).is_ok();
        let r = survey(dir.path(), &ex, Some("main.md"));
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        if listable {
            // Running as root: permission bits do not stop reading.
            assert!(r.is_ok());
        } else {
            match r {
                Err(PayloadError::Io { path, .. }) => assert_eq!(path, sub),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
