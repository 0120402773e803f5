//! JSON objects with a fixed field order, as the real server emits them. serde_json's `Map` sorts
//! keys unless `preserve_order` is on, and turning that feature on here would change the product
//! crate's serde_json too (features unify across the workspace), so objects are assembled here.

use serde_json::Value;

/// A JSON string literal.
pub fn string(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// Any serde_json value, compact.
pub fn value(v: &Value) -> String {
    serde_json::to_string(v).expect("a Value always serializes")
}

/// An object from `(key, already-encoded JSON value)` pairs, in the given order.
pub fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", string(k), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// An array from already-encoded JSON values.
pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_field_order_and_escapes() {
        let o = object(&[("z", string("a\"b")), ("a", "null".into())]);
        assert_eq!(o, r#"{"z":"a\"b","a":null}"#);
        let parsed: Value = serde_json::from_str(&o).unwrap();
        assert_eq!(parsed["z"], "a\"b");
    }
}
