//! Claims of an authenticated request, and the authorization rules checked against them.
//!
//! `scopes_required`, `audience_required`, `groups_required`, `roles_required` (Kong's names):
//! each is a list of entries; within one entry the space-separated values must all be
//! present, across entries any one entry suffices. The claim each rule reads is a path of
//! keys (`roles_claim: [realm_access, roles]`); a claim may be a space-separated string or an
//! array of strings.

use serde_json::{Map, Value};

use crate::core::error::ConfigError;
use crate::core::header::HeaderValue;

/// A JSON object of claims (JWT payload, introspection answer).
pub type Claims = Map<String, Value>;

/// Follows `path` through nested objects.
pub fn lookup<'a>(claims: &'a Claims, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

/// The values of a claim as strings: a string is split on spaces, an array yields its
/// string (and number/bool) items.
pub fn values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

/// One `*_required` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Config key, for messages (`scopes_required` …).
    pub name: &'static str,
    pub claim: Vec<String>,
    /// Alternatives; each is a set of values that must all be present.
    pub any_of: Vec<Vec<String>>,
}

impl Rule {
    pub fn new(name: &'static str, claim: Vec<String>, entries: Vec<String>) -> Result<Rule, ConfigError> {
        if claim.is_empty() || claim.iter().any(|k| k.is_empty()) {
            return Err(ConfigError(format!("the claim path for `{name}` must be a non-empty list of keys")));
        }
        let mut any_of = Vec::new();
        for e in entries {
            let all: Vec<String> = e.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
            if all.is_empty() {
                return Err(ConfigError(format!("`{name}`: empty entry")));
            }
            any_of.push(all);
        }
        Ok(Rule { name, claim, any_of })
    }

    /// True when some entry has all its values in the claim.
    pub fn satisfied_by(&self, claims: &Claims) -> bool {
        if self.any_of.is_empty() {
            return true;
        }
        let have = lookup(claims, &self.claim).map(values).unwrap_or_default();
        self.any_of.iter().any(|all| all.iter().all(|v| have.contains(v)))
    }
}

/// Returns the first rule that `claims` fails.
pub fn first_failed<'a>(rules: &'a [Rule], claims: &Claims) -> Option<&'a Rule> {
    rules.iter().find(|r| !r.satisfied_by(claims))
}

/// A claim rendered for a header: strings as they are, arrays comma-joined, other JSON as
/// compact JSON. `None` when it has control characters (it could split or smuggle headers).
pub fn header_value(v: &Value) -> Option<HeaderValue> {
    HeaderValue::new(render(v)).ok()
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn and_within_entry_or_across_entries() {
        let r = Rule::new("scopes_required", path(&["scope"]), vec!["api:read api:write".into(), "admin".into()]).unwrap();
        assert!(r.satisfied_by(&claims(json!({"scope": "openid api:read api:write"}))));
        assert!(r.satisfied_by(&claims(json!({"scope": "admin"}))));
        assert!(!r.satisfied_by(&claims(json!({"scope": "api:read"}))));
        assert!(!r.satisfied_by(&claims(json!({}))));
    }

    #[test]
    fn nested_claims_and_arrays() {
        let r = Rule::new("roles_required", path(&["realm_access", "roles"]), vec!["writer".into()]).unwrap();
        assert!(r.satisfied_by(&claims(json!({"realm_access": {"roles": ["reader", "writer"]}}))));
        assert!(!r.satisfied_by(&claims(json!({"realm_access": {"roles": ["reader"]}}))));
        assert!(!r.satisfied_by(&claims(json!({"realm_access": "writer"}))));
        let aud = Rule::new("audience_required", path(&["aud"]), vec!["https://api".into()]).unwrap();
        assert!(aud.satisfied_by(&claims(json!({"aud": "https://api"}))));
        assert!(aud.satisfied_by(&claims(json!({"aud": ["x", "https://api"]}))));
    }

    #[test]
    fn empty_rule_passes_and_first_failed_reports() {
        let none = Rule::new("groups_required", path(&["groups"]), vec![]).unwrap();
        let g = Rule::new("groups_required", path(&["groups"]), vec!["admins".into()]).unwrap();
        let c = claims(json!({"groups": ["users"]}));
        assert!(none.satisfied_by(&c));
        assert_eq!(first_failed(&[none.clone(), g.clone()], &c).map(|r| r.name), Some("groups_required"));
    }

    #[test]
    fn header_rendering() {
        assert_eq!(header_value(&json!(["a", "b"])).unwrap().as_str(), "a,b");
        assert_eq!(header_value(&json!(42)).unwrap().as_str(), "42");
        assert!(header_value(&json!("evil\r\nx-admin: 1")).is_none());
        assert!(header_value(&json!(["ok", "x\ny"])).is_none());
    }
}
