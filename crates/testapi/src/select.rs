//! Label and field selectors, as the API server parses them.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` and `fieldSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<(String, String, bool)>, // (path, value, equal)
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn parse_label(req: &str) -> Result<Requirement, ApiError> {
    let bad = || ApiError::bad_request(&format!("unable to parse requirement: {req:?}"));
    if let Some(key) = req.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_owned()));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, rest)) = req.split_once(" notin ") {
        return Ok(Requirement::NotIn(
            k.trim().into(),
            parse_set(rest).ok_or_else(bad)?,
        ));
    }
    if let Some((k, rest)) = req.split_once(" in ") {
        return Ok(Requirement::In(
            k.trim().into(),
            parse_set(rest).ok_or_else(bad)?,
        ));
    }
    if req.contains(' ') || req.contains('(') {
        return Err(bad());
    }
    Ok(Requirement::Exists(req.to_owned()))
}

impl Selectors {
    /// Parses the query's selectors.
    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels = split_top(label_selector.unwrap_or(""))
            .into_iter()
            .map(parse_label)
            .collect::<Result<_, _>>()?;
        let mut fields = Vec::new();
        for req in split_top(field_selector.unwrap_or("")) {
            let (path, value, equal) = if let Some((k, v)) = req.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(&format!(
                    "invalid field selector: {req:?}"
                )));
            };
            fields.push((path.trim().to_owned(), value.trim().to_owned(), equal));
        }
        Ok(Self { labels, fields })
    }

    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, value, equal)| {
                let mut at = object;
                for part in path.split('.') {
                    at = &at[part];
                }
                let actual = match at {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (actual == *value) == *equal
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "litellm-postgres", "tier": "db"}},
                         "status": {"phase": "Running"}});
        for (sel, want) in [
            ("app=litellm-postgres", true),
            ("app==litellm-postgres,tier=db", true),
            ("app!=litellm-postgres", false),
            ("app in (a, litellm-postgres)", true),
            ("app notin (litellm-postgres)", false),
            ("tier", true),
            ("!tier", false),
            ("missing notin (x)", true),
            ("app=other", false),
        ] {
            assert_eq!(
                Selectors::parse(Some(sel), None).unwrap().matches(&pod),
                want,
                "{sel}"
            );
        }
        for (sel, want) in [
            ("metadata.name=p", true),
            ("metadata.name!=p", false),
            ("status.phase=Running,metadata.namespace=ns", true),
        ] {
            assert_eq!(
                Selectors::parse(None, Some(sel)).unwrap().matches(&pod),
                want,
                "{sel}"
            );
        }
        assert!(Selectors::parse(Some("app in a"), None).is_err());
    }
}
