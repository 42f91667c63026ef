//! Secret values never show in Debug, JSON, or errors.

use wasmgate_conf::*;

use crate::support::{apply, lines};

const VALUE: &str = "hunter2-very-secret";

fn secret_yaml() -> String {
    // "hunter2-very-secret" in base64, plus the same in stringData.
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: s}}
data:
  a: aHVudGVyMi12ZXJ5LXNlY3JldA==
stringData:
  b: {VALUE}
"
    )
}

#[test]
fn debug_and_json_redact_secret_values() {
    let (s, r) = apply(&mut ConfigStore::new(), &[("s.yaml", &secret_yaml())]);
    assert!(r.is_ok(), "{:?}", lines(&r.errors));
    let secret = s.secret("default", "s").unwrap();
    assert_eq!(secret.get("a").unwrap().expose(), VALUE.as_bytes());
    assert_eq!(secret.get("b").unwrap().expose(), VALUE.as_bytes());
    assert_eq!(secret.secret_type, "Opaque");
    let debug = format!("{s:?}");
    let json = serde_json::to_string(&*s).unwrap();
    for out in [&debug, &json] {
        assert!(!out.contains("hunter2"), "value leaked: {out}");
        assert!(!out.contains("aHVudGVy"), "base64 value leaked: {out}");
        assert!(out.contains("<redacted 19 bytes>"), "{out}");
    }
    assert_eq!(
        format!("{}", secret.get("a").unwrap()),
        "<redacted 19 bytes>"
    );
}

#[test]
fn string_data_wins_over_data() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: b2xk}\nstringData: {k: new}\n";
    let (s, _) = apply(&mut ConfigStore::new(), &[("s.yaml", yaml)]);
    assert_eq!(
        s.secret("default", "s").unwrap().get("k").unwrap().expose(),
        b"new"
    );
}

#[test]
fn errors_about_secrets_do_not_show_values() {
    // Bad base64 whose invalid byte is part of the value; a number where a string belongs; and a
    // rejected secret with an unknown field next to the value.
    let yaml = "apiVersion: v1
kind: Secret
metadata: {name: a}
data:
  k: \"hunter2!secret\"
---
apiVersion: v1
kind: Secret
metadata: {name: b}
stringData:
  pin: 98765432
---
apiVersion: v1
kind: Secret
metadata: {name: d}
data: hunter2-where-a-map-belongs
---
apiVersion: v1
kind: Secret
metadata: {name: c}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{\"hunter2\": '
";
    let (s, r) = apply(&mut ConfigStore::new(), &[("s.yaml", yaml)]);
    let all = format!(
        "{:?}\n{}\n{}",
        s,
        lines(&r.errors).join("\n"),
        serde_json::to_string(&*s).unwrap()
    );
    assert_eq!(r.errors.len(), 4, "{all}");
    for leak in ["hunter2", "98765432", "secret\""] {
        assert!(!all.contains(leak), "{leak} leaked:\n{all}");
    }
    assert_eq!(
        lines(&r.errors)[0],
        "s.yaml[doc 0] Secret default/a: data[k]: invalid base64: invalid character at offset 7"
    );
}
