//! The module graph of `src/` has no two modules that import each other: each pair of modules
//! has one direction, so a module can be read (and changed) knowing only what it imports.
//! Read from the source: every `crate::a::b` and `super::x` path outside comments and test
//! modules is an edge to the module it names (a parent and its own submodules are one unit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`plugin::host`) -> its source with comments and the test module cut.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut name = rel.to_str().unwrap().replace('/', "::");
            if let Some(parent) = name.strip_suffix("::mod") {
                name = parent.to_string();
            }
            if name == "main" || name == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(name, code);
        }
    }
    out
}

/// The `a::b::c` identifiers after `prefix` in `code` (lowercase path segments only).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + prefix.len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        out.push(after[..end].trim_end_matches(':'));
    }
    out
}

/// The longest module `path` starts with.
fn resolve<'m>(names: &'m BTreeSet<String>, path: &str) -> Option<&'m String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| names.get(&parts[..n].join("::")))
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

#[test]
fn no_two_modules_import_each_other() {
    let mods = modules();
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    assert!(names.contains("plugin::host") && names.contains("docker"));
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (m, code) in &mods {
        let mut to: BTreeSet<&str> = BTreeSet::new();
        for p in paths_after(code, "crate::") {
            if let Some(r) = resolve(&names, p) {
                to.insert(r);
            }
        }
        let parent = m.rsplit_once("::").map(|(p, _)| p);
        for p in paths_after(code, "super::") {
            let full = match parent {
                Some(parent) => format!("{parent}::{p}"),
                None => p.to_string(),
            };
            if let Some(r) = resolve(&names, &full) {
                to.insert(r);
            }
        }
        to.retain(|t| !related(m, t));
        edges.insert(m, to);
    }
    let mut pairs = Vec::new();
    for (a, to) in &edges {
        for b in to {
            if a < b && edges.get(b).is_some_and(|back| back.contains(a)) {
                pairs.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(
        pairs.is_empty(),
        "modules that import each other: {}",
        pairs.join(", ")
    );
    // The check sees edges at all (a parser that found none would pass anything).
    assert!(
        edges["update"].contains("plugin::host"),
        "{:?}",
        edges["update"]
    );
    assert!(edges["deploy"].contains("config"), "{:?}", edges["deploy"]);
}
