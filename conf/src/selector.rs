//! Kubernetes `LabelSelector` (`metav1.LabelSelector`): `matchLabels` and `matchExpressions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{Problems, check_labels, is_label_value, label_key_problem};

/// Selects objects by their labels. Every `matchLabels` pair and every `matchExpressions` entry
/// must hold (AND); an empty selector selects everything, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `key operator values`, e.g. `env In [prod, staging]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    /// Non-empty for `In` and `NotIn`, empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }

    pub(crate) fn validate(&self, p: &mut Problems, f: &str) {
        check_labels(p, &format!("{f}.matchLabels"), &self.match_labels);
        for (i, e) in self.match_expressions.iter().enumerate() {
            let ef = format!("{f}.matchExpressions[{i}]");
            if let Some(why) = label_key_problem(&e.key) {
                p.error(format!("{ef}.key"), format!("invalid label key: {why}"));
            }
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => p.error(
                    format!("{ef}.values"),
                    format!("must be non-empty when operator is {:?}", e.operator),
                ),
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !e.values.is_empty() =>
                {
                    p.error(
                        format!("{ef}.values"),
                        format!("must be empty when operator is {:?}", e.operator),
                    )
                }
                _ => {}
            }
            for (j, v) in e.values.iter().enumerate() {
                if !is_label_value(v) {
                    p.error(
                        format!("{ef}.values[{j}]"),
                        format!("invalid label value {v:?}"),
                    );
                }
            }
        }
    }
}

// === impl LabelSelectorRequirement ===

impl LabelSelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A label map from pairs (for the tests of whatever matches labels).
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let prod = labels(&[("env", "prod"), ("team", "a")]);
        let bare = labels(&[]);
        assert!(LabelSelector::default().matches(&bare), "empty selects all");
        let by_label = LabelSelector {
            match_labels: labels(&[("env", "prod")]),
            ..LabelSelector::default()
        };
        assert!(by_label.matches(&prod));
        assert!(!by_label.matches(&bare));
        let one = |e| LabelSelector {
            match_expressions: vec![e],
            ..LabelSelector::default()
        };
        use SelectorOperator::*;
        assert!(one(expr("env", In, &["prod", "qa"])).matches(&prod));
        assert!(!one(expr("env", In, &["qa"])).matches(&prod));
        assert!(!one(expr("env", In, &["prod"])).matches(&bare));
        assert!(one(expr("env", NotIn, &["qa"])).matches(&prod));
        assert!(one(expr("env", NotIn, &["qa"])).matches(&bare), "absent");
        assert!(!one(expr("env", NotIn, &["prod"])).matches(&prod));
        assert!(one(expr("team", Exists, &[])).matches(&prod));
        assert!(!one(expr("team", Exists, &[])).matches(&bare));
        assert!(one(expr("team", DoesNotExist, &[])).matches(&bare));
        assert!(!one(expr("team", DoesNotExist, &[])).matches(&prod));
        // Everything must hold.
        let both = LabelSelector {
            match_labels: labels(&[("env", "prod")]),
            match_expressions: vec![expr("team", In, &["b"])],
        };
        assert!(!both.matches(&prod));
    }

    #[test]
    fn operators_check_their_values() {
        use SelectorOperator::*;
        let mut p = Problems::default();
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                expr("a", In, &[]),
                expr("b", Exists, &["x"]),
                expr("c", NotIn, &["ok", "not ok"]),
            ],
        }
        .validate(&mut p, "s");
        let fields: Vec<_> = p.errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.matchExpressions[0].values",
                "s.matchExpressions[1].values",
                "s.matchExpressions[2].values[1]"
            ]
        );
    }
}
