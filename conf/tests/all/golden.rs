//! Every file of `fixtures/invalid/` against its golden `.errors` file: the exact lines
//! `wasmgate validate` prints (errors, then `warning:` lines). Set `UPDATE_GOLDEN=1` to rewrite them
//! after a deliberate change, and review the diff.

use crate::support::{fixtures, lines, load_fixture};

#[test]
fn invalid_fixtures_match_golden_errors() {
    let dir = fixtures().join("invalid");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "fixtures missing: {names:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for name in names {
        let (_, report) = load_fixture(&format!("invalid/{name}"));
        assert!(!report.errors.is_empty(), "{name} must produce errors");
        let mut got = lines(&report.errors);
        got.extend(report.warnings.iter().map(|w| format!("warning: {w}")));
        let got = got.join("\n") + "\n";
        let golden = dir.join(name.replace(".yaml", ".errors"));
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            mismatches.push(format!("--- {}\n{got}", golden.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to rewrite):\n{}",
        mismatches.join("\n")
    );
}
