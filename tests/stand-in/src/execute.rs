//! `POST /execute`: request validation (FastAPI-style 422s), settings.toml lookup with the real
//! server's error texts, and a run of the script's `@shell` and `@return` operations, parsed as
//! Fractalic's parser does (see `fractalic.rs`), that writes `<script>.ctx` next to the script.

mod fractalic;

use crate::http::Response;
use crate::json::{array, object, string, value};
use serde_json::Value;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const NO_PROVIDER: &str = "No model specified and no defaultProvider in settings.toml";

/// Handles an /execute body; `fractalic_dir` is where the fallback settings.toml lives
/// (`/fractalic` in the image).
pub fn handle(body: &[u8], fractalic_dir: &Path) -> Response {
    match parse_body(body) {
        Ok((filename, parameter_text)) => Response::json(
            200,
            run(&filename, parameter_text.as_deref(), fractalic_dir),
        ),
        Err(detail) => Response::json(422, object(&[("detail", array(&detail))])),
    }
}

/// The fields of a valid body, or FastAPI's list of validation errors.
fn parse_body(body: &[u8]) -> Result<(String, Option<String>), Vec<String>> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![object(&[
                ("type", string("json_invalid")),
                (
                    "loc",
                    array(&[
                        string("body"),
                        byte_offset(body, e.line(), e.column()).to_string(),
                    ]),
                ),
                ("msg", string("JSON decode error")),
                ("input", "{}".into()),
                ("ctx", object(&[("error", string(&e.to_string()))])),
            ])])
        }
    };
    let Some(obj) = parsed.as_object() else {
        return Err(vec![object(&[
            ("type", string("model_attributes_type")),
            ("loc", array(&[string("body")])),
            (
                "msg",
                string("Input should be a valid dictionary or object to extract fields from"),
            ),
            ("input", value(&parsed)),
        ])]);
    };
    let mut errors = Vec::new();
    let filename = match obj.get("filename") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(string_type("filename", other));
            None
        }
        None => {
            errors.push(object(&[
                ("type", string("missing")),
                ("loc", array(&[string("body"), string("filename")])),
                ("msg", string("Field required")),
                ("input", value(&parsed)),
            ]));
            None
        }
    };
    let parameter_text = match obj.get("parameter_text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(string_type("parameter_text", other));
            None
        }
    };
    match filename {
        Some(f) if errors.is_empty() => Ok((f, parameter_text)),
        _ => Err(errors),
    }
}

fn string_type(field: &str, input: &Value) -> String {
    object(&[
        ("type", string("string_type")),
        ("loc", array(&[string("body"), string(field)])),
        ("msg", string("Input should be a valid string")),
        ("input", value(input)),
    ])
}

/// serde_json reports line/column (1-based); FastAPI reports a character offset.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    before + column.saturating_sub(1)
}

/// The JSON answer for a well-formed request (always HTTP 200, as the real server).
fn run(filename: &str, parameter_text: Option<&str>, fractalic_dir: &Path) -> String {
    match try_run(filename, parameter_text, fractalic_dir) {
        Ok(s) => s,
        Err(error) => failure(&error),
    }
}

fn try_run(
    filename: &str,
    parameter_text: Option<&str>,
    fractalic_dir: &Path,
) -> Result<String, String> {
    // Relative names resolve against the working directory (/fractalic in the image), so
    // "payload/x/y.md" only works once /fractalic/payload links to /payload.
    let path = Path::new(filename);
    let script = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("File not found: {filename}"))
        }
        Err(e) => return Err(python_error(&e, path)),
    };
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let provider = provider(&folder, fractalic_dir)?;

    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    let ran = fractalic::run(&script, &folder);
    let ctx_path = folder.join(format!("{stem}.ctx"));
    let ctx = format!(
        "# Context written by fractalic-stand-in\nscript: {filename}\nprovider: {provider}\nparameter_text: {}\n\n{}{}",
        parameter_text.unwrap_or(""),
        ran.context,
        ran.notes
            .iter()
            .map(|n| format!("\n{n}\n"))
            .collect::<String>()
    );
    fs::write(&ctx_path, ctx).map_err(|e| python_error(&e, &ctx_path))?;

    let output = format!(
        "fractalic-stand-in ran {filename} with provider {provider}: {} lines, {} operation(s){}\n",
        script.lines().count(),
        ran.operations,
        if parameter_text.is_some() {
            ", with parameter_text"
        } else {
            ""
        }
    );
    let returned = ran.returned.as_deref();
    Ok(object(&[
        ("success", "true".into()),
        ("explicit_return", returned.is_some().to_string()),
        ("return_content", returned.map_or("null".into(), string)),
        ("branch_name", string(&branch_name())),
        ("ctx_file", "null".into()),
        ("output", string(&output)),
    ]))
}

fn failure(error: &str) -> String {
    object(&[
        ("success", "false".into()),
        ("error", string(error)),
        ("output", string("")),
        ("explicit_return", "false".into()),
        ("return_content", "null".into()),
        ("branch_name", "null".into()),
        ("ctx_file", "null".into()),
    ])
}

/// The provider named by the first settings.toml found (script folder, then `fractalic_dir`),
/// or the real server's error text. An unparsable file counts as having no defaultProvider.
fn provider(folder: &Path, fractalic_dir: &Path) -> Result<String, String> {
    let file = [
        folder.join("settings.toml"),
        fractalic_dir.join("settings.toml"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| NO_PROVIDER.to_string())?;
    let text = fs::read_to_string(&file).map_err(|e| python_error(&e, &file))?;
    provider_from_toml(&text)
}

fn provider_from_toml(text: &str) -> Result<String, String> {
    let table: toml::Table = text.parse().unwrap_or_default();
    let name = table
        .get("defaultProvider")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NO_PROVIDER.to_string())?;
    let entry = table
        .get("settings")
        .and_then(|s| s.as_table())
        .and_then(|s| s.get(name))
        .and_then(|e| e.as_table())
        .ok_or_else(|| format!("model \"{name}\" not found under [settings]"))?;
    entry
        .get("apiKey")
        .and_then(|k| k.as_str())
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| format!("No API key found for provider {name}"))?;
    Ok(name.to_string())
}

/// Python's rendering of an OSError: `[Errno 13] Permission denied: '/payload/x/y.ctx'`.
fn python_error(e: &io::Error, path: &Path) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    match e.raw_os_error() {
        Some(code) => format!("[Errno {code}] {text}: '{}'", path.display()),
        None => format!("{text}: '{}'", path.display()),
    }
}

/// Looks like Fractalic's run branches: `<yyyymmddhhmmss>_<8 hex>_<label>`.
fn branch_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (now.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{}_{:08x}_Stand-in-run",
        crate::clock::compact(now),
        mix as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stand-in-exec-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn body(resp: &Response) -> Value {
        serde_json::from_slice(&resp.body).unwrap()
    }

    #[test]
    fn settings_error_texts() {
        assert_eq!(provider_from_toml("").unwrap_err(), NO_PROVIDER);
        assert_eq!(provider_from_toml("not [toml").unwrap_err(), NO_PROVIDER);
        assert_eq!(
            provider_from_toml("defaultProvider = \"openai\"").unwrap_err(),
            "model \"openai\" not found under [settings]"
        );
        assert_eq!(
            provider_from_toml(
                "defaultProvider = \"openai\"\n[settings.openai]\nmodel = \"m\"\napiKey = \" \"\n"
            )
            .unwrap_err(),
            "No API key found for provider openai"
        );
        assert_eq!(
            provider_from_toml("defaultProvider = \"a/b\"\n[settings.\"a/b\"]\napiKey = \"k\"\n")
                .unwrap(),
            "a/b"
        );
    }

    #[test]
    fn malformed_and_incomplete_bodies_are_422() {
        let dir = tmp("422");
        for raw in [
            &b"{not json"[..],
            b"[1]",
            b"{}",
            b"{\"filename\": 3}",
            b"{\"filename\":\"x\",\"parameter_text\":1}",
        ] {
            let resp = handle(raw, &dir);
            assert_eq!(resp.status, 422, "{}", String::from_utf8_lossy(raw));
            assert!(body(&resp)["detail"].is_array());
        }
        let resp = handle(b"{}", &dir);
        assert_eq!(
            String::from_utf8(resp.body).unwrap(),
            r#"{"detail":[{"type":"missing","loc":["body","filename"],"msg":"Field required","input":{}}]}"#
        );
        assert_eq!(byte_offset(b"{\n  x", 2, 3), 4);
    }

    #[test]
    fn missing_file_is_exact_failure_shape() {
        let dir = tmp("missing");
        let name = dir.join("nope.md").display().to_string();
        let resp = handle(
            format!("{{\"filename\":{}}}", string(&name)).as_bytes(),
            &dir,
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            String::from_utf8(resp.body).unwrap(),
            format!(
                r#"{{"success":false,"error":{},"output":"","explicit_return":false,"return_content":null,"branch_name":null,"ctx_file":null}}"#,
                string(&format!("File not found: {name}"))
            )
        );
    }

    #[test]
    fn success_writes_ctx_and_prefers_script_folder_settings() {
        let fractalic = tmp("fallback");
        let scripts = tmp("scripts");
        fs::write(
            scripts.join("main.md"),
            "# Hi {id=hi}\n\n@return\nblock: hi\n",
        )
        .unwrap();
        let req = format!(
            "{{\"filename\":{},\"parameter_text\":\"p\"}}",
            string(&scripts.join("main.md").display().to_string())
        );
        // No settings anywhere.
        let v = body(&handle(req.as_bytes(), &fractalic));
        assert_eq!(v["error"], NO_PROVIDER);
        // Fallback folder settings are used.
        fs::write(
            fractalic.join("settings.toml"),
            "defaultProvider = \"x\"\n[settings.x]\napiKey = \"k\"\n",
        )
        .unwrap();
        let resp = handle(req.as_bytes(), &fractalic);
        let text = String::from_utf8(resp.body.clone()).unwrap();
        assert!(text.starts_with(r##"{"success":true,"explicit_return":true,"return_content":"# Hi {id=hi}\n\n","branch_name":""##), "{text}");
        assert!(text.contains(r#","ctx_file":null,"output":""#), "{text}");
        assert!(fs::read_to_string(scripts.join("main.ctx"))
            .unwrap()
            .contains("# Hi"));
        // The script folder's settings win over the fallback.
        fs::write(scripts.join("settings.toml"), "defaultProvider = \"y\"\n").unwrap();
        let v = body(&handle(req.as_bytes(), &fractalic));
        assert_eq!(v["error"], "model \"y\" not found under [settings]");
    }
}
