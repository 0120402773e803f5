//! A Fractalic script read as Fractalic's parser (`core/ast_md/parser.py`) reads it, and run as
//! far as it needs no LLM: `@shell` runs its `prompt` with `sh -c` and inserts the output as a
//! block under `use-header`; `@return` returns a block (`block: ID`) or its `prompt` text.
//!
//! The rule that matters for fidelity: an operation starts only at the top of the file or after
//! a blank line. An `@shell` line right under a heading is part of the heading block's text, so
//! the `@return` after it finds no block: the run still succeeds, with no return content, and
//! the context records `Block not found in @return operation`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `@shell` command may run before it is killed.
const SHELL_DEADLINE: Duration = Duration::from_secs(30);

/// A part of the document: a heading's block or an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A heading and the text under it (`id` from `{id=...}`, else from the heading's words).
    Block { id: String, text: String },
    /// `@name` and its `key: value` parameters.
    Operation {
        name: String,
        params: Vec<(String, String)>,
    },
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Ran {
    /// `@return`'s content, if one returned something.
    pub returned: Option<String>,
    /// The context after the run (every block, inserted ones included).
    pub context: String,
    /// Notes for the `.ctx` (e.g. `Block not found in @return operation`).
    pub notes: Vec<String>,
    /// Operations seen.
    pub operations: usize,
}

fn is_heading(line: &str) -> bool {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    (1..=6).contains(&hashes) && line[hashes..].starts_with(' ')
}

/// `@name` with a name of letters, digits and `_`.
fn operation_name(line: &str) -> Option<String> {
    let rest = line.strip_prefix('@')?.trim_end();
    (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| rest.to_string())
}

/// `{id=x}` in a heading, else the heading's words in kebab case.
fn heading_id(line: &str) -> String {
    if let Some(start) = line.find("{id=") {
        if let Some(end) = line[start..].find('}') {
            return line[start + 4..start + end].trim().to_string();
        }
    }
    let words = line.trim_start_matches('#').trim().to_lowercase();
    let mut id = String::new();
    for c in words.chars() {
        if c.is_alphanumeric() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_string()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].replace("\\\"", "\"")
    } else {
        v.to_string()
    }
}

/// Splits a script into blocks and operations by Fractalic's rule.
pub fn parse(script: &str) -> Vec<Node> {
    let lines: Vec<&str> = script.lines().collect();
    let mut nodes = Vec::new();
    let mut i = 0;
    // The text before the first heading belongs to no block Fractalic can address.
    let mut current: Option<(String, String)> = None;
    let flush = |current: &mut Option<(String, String)>, nodes: &mut Vec<Node>| {
        if let Some((id, text)) = current.take() {
            nodes.push(Node::Block { id, text });
        }
    };
    while i < lines.len() {
        let line = lines[i];
        let after_blank = i == 0 || lines[i - 1].trim().is_empty();
        if let Some(name) = operation_name(line).filter(|_| after_blank) {
            flush(&mut current, &mut nodes);
            let mut params: Vec<(String, String)> = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().is_empty() {
                let l = lines[i];
                if l.starts_with([' ', '\t']) {
                    // A continuation of the previous value (YAML block text).
                    if let Some((_, v)) = params.last_mut() {
                        if !v.is_empty() {
                            v.push('\n');
                        }
                        v.push_str(l.trim());
                    }
                } else if let Some((k, v)) = l.split_once(':') {
                    let v = v.trim();
                    let v = if v == "|" || v == ">" {
                        String::new()
                    } else {
                        unquote(v)
                    };
                    params.push((k.trim().to_string(), v));
                }
                i += 1;
            }
            nodes.push(Node::Operation { name, params });
            continue;
        }
        if is_heading(line) {
            flush(&mut current, &mut nodes);
            current = Some((heading_id(line), format!("{line}\n")));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
        i += 1;
    }
    flush(&mut current, &mut nodes);
    nodes
}

/// Runs `prompt` with `sh -c` in `dir`; stdout then stderr, killed after [`SHELL_DEADLINE`].
fn shell(prompt: &str, dir: &Path) -> String {
    let child = Command::new("sh")
        .arg("-c")
        .arg(prompt)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("Error: cannot run sh: {e}\n"),
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut o = String::new();
        let mut e = String::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_string(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_string(&mut e);
        }
        o + &e
    });
    let deadline = Instant::now() + SHELL_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    reader.join().unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Runs the script's operations in order (shell commands in `dir`).
pub fn run(script: &str, dir: &Path) -> Ran {
    let mut ran = Ran::default();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for node in parse(script) {
        match node {
            Node::Block { id, text } => blocks.push((id, text)),
            Node::Operation { name, params } => {
                ran.operations += 1;
                match name.as_str() {
                    "shell" => {
                        let prompt = param(&params, "prompt").unwrap_or("");
                        let header = param(&params, "use-header")
                            .unwrap_or("# OS Shell Tool response block");
                        let mut output = shell(prompt, dir);
                        if !output.is_empty() && !output.ends_with('\n') {
                            output.push('\n');
                        }
                        blocks.push((heading_id(header), format!("{header}\n{output}\n")));
                    }
                    "return" => {
                        if let Some(id) = param(&params, "block") {
                            let id = id.trim_end_matches("/*");
                            match blocks.iter().find(|(b, _)| b == id) {
                                Some((_, text)) => ran.returned = Some(text.clone()),
                                None => ran
                                    .notes
                                    .push(format!("Block not found in @return operation: {id}")),
                            }
                        } else if let Some(p) = param(&params, "prompt") {
                            ran.returned = Some(format!("{p}\n"));
                        } else {
                            ran.notes
                                .push("Block not found in @return operation".into());
                        }
                        break;
                    }
                    other => ran.notes.push(format!(
                        "@{other} needs an LLM, which the stand-in does not have; skipped"
                    )),
                }
            }
        }
    }
    ran.context = blocks.into_iter().map(|(_, t)| t).collect();
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo \"hello from fractalic shell\"; uname -s\nuse-header: \"# Shell output {id=shell-output}\"\n\n@return\nblock: shell-output\n";

    #[test]
    fn the_demo_returns_the_shell_output_block() {
        let ran = run(DEMO, Path::new("."));
        assert_eq!(ran.operations, 2);
        assert_eq!(
            ran.returned.as_deref(),
            Some("# Shell output {id=shell-output}\nhello from fractalic shell\nLinux\n\n")
        );
        assert!(ran.notes.is_empty(), "{:?}", ran.notes);
    }

    #[test]
    fn an_operation_right_under_a_heading_is_heading_text() {
        let script = DEMO.replacen("{id=demo-task}\n\n@shell", "{id=demo-task}\n@shell", 1);
        let nodes = parse(&script);
        assert!(matches!(&nodes[0], Node::Block { text, .. } if text.contains("@shell\nprompt:")));
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        let ran = run(&script, Path::new("."));
        assert_eq!(ran.returned, None);
        assert_eq!(
            ran.notes,
            vec!["Block not found in @return operation: shell-output".to_string()]
        );
    }

    #[test]
    fn ids_params_and_prompts() {
        assert_eq!(
            heading_id("# Shell output {id=shell-output}"),
            "shell-output"
        );
        assert_eq!(heading_id("## My Task, v2"), "my-task-v2");
        assert!(is_heading("# x") && !is_heading("#x") && !is_heading("####### x"));
        assert_eq!(operation_name("@shell"), Some("shell".into()));
        assert_eq!(operation_name("@ x"), None);
        let ran = run("@return\nprompt: \"done\"\n", Path::new("."));
        assert_eq!(ran.returned.as_deref(), Some("done\n"));
        let ran = run("# A\n\n@llm\nprompt: hi\n", Path::new("."));
        assert_eq!(ran.returned, None);
        assert!(ran.notes[0].contains("@llm"), "{:?}", ran.notes);
    }
}
