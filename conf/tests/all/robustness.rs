//! Bad input never panics: thousands of random mutations of the valid fixtures go through the
//! whole pipeline (parse, validate, cross-check, snapshot, JSON).

use wasmgate_conf::*;

use crate::support::fixtures;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SNIPPETS: [&str; 16] = [
    ":", "- ", "\n", "  ", "{", "}", "[", "]", "\"", "'", "&a ", "*a", "---\n", "0", "-1", "é",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        if chars.is_empty() {
            break;
        }
        let at = rng.below(chars.len());
        match rng.below(3) {
            0 => {
                chars.remove(at);
            }
            1 => {
                let s = SNIPPETS[rng.below(SNIPPETS.len())];
                for (i, c) in s.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            _ => {
                let other = chars[rng.below(chars.len())];
                chars[at] = other;
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_mutations_never_panic() {
    let dir = fixtures().join("valid");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut store = ConfigStore::new();
    let mut rejected = 0;
    for round in 0..400 {
        let mut set: Vec<SourceFile> = files
            .iter()
            .map(|(n, t)| SourceFile::new(n.as_str(), t.as_str()))
            .collect();
        let victim = rng.below(set.len());
        let text = set[victim].contents.clone().unwrap();
        set[victim].contents = Ok(mutate(&mut rng, &text));
        let (snapshot, report) = store.apply(set);
        rejected += usize::from(!report.errors.is_empty());
        let json =
            serde_json::to_string(&*snapshot).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            !json.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
            "round {round}: secret leaked"
        );
        for e in &report.errors {
            assert!(
                !e.to_string().contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
                "round {round}: secret in {e}"
            );
        }
    }
    // The mutations do hit: most rounds are rejected somewhere.
    assert!(rejected > 100, "only {rejected} rounds rejected");
}
