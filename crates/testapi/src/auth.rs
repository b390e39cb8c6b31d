//! Optional bearer tokens with RBAC rules, so a test can prove that a Role is sufficient: calls it
//! allows pass, anything else is 403 Forbidden, as on a real cluster.

use std::collections::HashMap;

use serde_json::Value;

/// One RBAC policy rule (as in a `Role`'s `rules`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` for core, `*` for all).
    pub api_groups: Vec<String>,
    /// Resources, with subresources as `pods/exec` (`*` for all).
    pub resources: Vec<String>,
    /// Verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `*`).
    pub verbs: Vec<String>,
    /// Object names the rule is limited to (empty: all).
    pub resource_names: Vec<String>,
}

impl Rule {
    /// The rules of a `Role` or `ClusterRole` object.
    pub fn from_role(role: &Value) -> Vec<Rule> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        role["rules"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| Rule {
                        api_groups: strings(&r["apiGroups"]),
                        resources: strings(&r["resources"]),
                        verbs: strings(&r["verbs"]),
                        resource_names: strings(&r["resourceNames"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn allows(&self, verb: &str, group: &str, resource: &str, name: Option<&str>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        // As RBAC's ResourceMatches: `*`, the exact `resource/subresource`, or `*/subresource`.
        let sub = resource.split_once('/').map(|(_, sub)| sub);
        let resource_matches = self.resources.iter().any(|r| {
            r == "*" || r == resource || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s))
        });
        any(&self.verbs, verb)
            && any(&self.api_groups, group)
            && resource_matches
            && (self.resource_names.is_empty()
                || name.is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }
}

/// Who a token is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// User name for messages, e.g. `system:serviceaccount:ns:litemaas-backup`.
    pub user: String,
    /// The namespace the rules apply in (a Role binding); `None` for cluster-wide rules.
    pub namespace: Option<String>,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// Tokens the server accepts. Without any restricted token, every request is allowed.
#[derive(Debug, Default, Clone)]
pub struct Auth {
    restricted: HashMap<String, Identity>,
}

/// The outcome of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 401: an unknown token.
    Unauthenticated,
    /// 403, with the user named.
    Deny(String),
}

impl Auth {
    /// Registers `token`.
    pub fn add(&mut self, token: String, identity: Identity) {
        self.restricted.insert(token, identity);
    }

    /// How many restricted tokens there are.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.restricted.len()
    }

    /// The identity of a restricted `token`; `None` for the administrator, no token, or an
    /// unknown token.
    pub fn identity(&self, token: Option<&str>) -> Option<&Identity> {
        self.restricted.get(token?)
    }

    /// Checks a request. `token` is the bearer token, if any; requests without a restricted
    /// token are the test's own (administrator) requests.
    pub fn check(
        &self,
        token: Option<&str>,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Decision {
        let Some(token) = token else {
            return Decision::Allow;
        };
        if token == crate::ADMIN_TOKEN {
            return Decision::Allow;
        }
        let Some(identity) = self.restricted.get(token) else {
            return Decision::Unauthenticated;
        };
        let in_scope = identity
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == namespace);
        if in_scope
            && identity
                .rules
                .iter()
                .any(|r| r.allows(verb, group, resource, name))
        {
            Decision::Allow
        } else {
            Decision::Deny(identity.user.clone())
        }
    }
}
