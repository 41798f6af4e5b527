//! Who is calling: turning the credentials of a request into an `Identity`, the first step of
//! the pipeline, shared by every ingress.
//!
//! flux7's rules are kept (`Bearer agent:<id>`, a raw bearer used as the agent id, `anonymous`),
//! with two fixes: the admin token is an *operator* identity (its value never becomes an agent id
//! in traces), and tokens assigned to agents in `auth.agent_tokens` make an authenticated agent.

use std::collections::HashMap;

use mesh7_config::AuthConfig;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// No credentials.
    Anonymous,
    /// `Bearer agent:<id>` or a raw bearer: a claim, not a proof.
    Declared,
    /// A token the configuration assigns to this agent.
    Token,
    /// The admin token.
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    pub kind: IdentityKind,
}

impl Identity {
    pub fn is_operator(&self) -> bool {
        self.kind == IdentityKind::Operator
    }

    pub fn is_anonymous(&self) -> bool {
        self.kind == IdentityKind::Anonymous
    }
}

/// The agent id given to the admin token on the data plane.
pub const OPERATOR_AGENT: &str = "operator";

/// Resolves credentials. Built once from the `auth` section (and `MESH_ADMIN_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    admin_token: Option<String>,
    agent_tokens: HashMap<String, String>,
    require_authentication: bool,
}

impl Authenticator {
    /// `env_admin_token` is `MESH_ADMIN_TOKEN`, which overrides the configured token when non-empty.
    pub fn new(auth: &AuthConfig, env_admin_token: Option<String>) -> Self {
        let admin_token = env_admin_token
            .filter(|t| !t.is_empty())
            .or_else(|| auth.admin_token.clone().filter(|t| !t.is_empty()));
        Self {
            admin_token,
            agent_tokens: auth
                .agent_tokens
                .iter()
                .map(|(token, agent)| (token.clone(), agent.clone()))
                .collect(),
            require_authentication: auth.require_authentication,
        }
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin_token.is_some()
    }

    pub fn requires_authentication(&self) -> bool {
        self.require_authentication
    }

    /// The identity behind an `Authorization` header value (or its absence).
    pub fn identify(&self, authorization: Option<&str>) -> Identity {
        let raw = authorization.unwrap_or("");
        // flux7 strips a literal, case-sensitive "Bearer " prefix and otherwise uses the value.
        let bearer = raw.strip_prefix("Bearer ").unwrap_or(raw);
        if bearer.is_empty() {
            return Identity {
                agent: "anonymous".to_owned(),
                kind: IdentityKind::Anonymous,
            };
        }
        if self.is_admin_token(bearer) {
            return Identity {
                agent: OPERATOR_AGENT.to_owned(),
                kind: IdentityKind::Operator,
            };
        }
        if let Some(agent) = self.agent_tokens.get(bearer) {
            return Identity {
                agent: agent.clone(),
                kind: IdentityKind::Token,
            };
        }
        let agent = bearer.strip_prefix("agent:").unwrap_or(bearer);
        Identity {
            agent: agent.to_owned(),
            kind: IdentityKind::Declared,
        }
    }

    /// Whether `bearer` is the admin token, compared in constant time.
    pub fn is_admin_token(&self, bearer: &str) -> bool {
        self.admin_token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), bearer.as_bytes()))
    }

    /// The control-plane gate: the admin token when one is set, else a loopback peer.
    pub fn control_plane_allowed(
        &self,
        authorization: Option<&str>,
        peer_is_loopback: bool,
    ) -> bool {
        match &self.admin_token {
            Some(_) => {
                let raw = authorization.unwrap_or("");
                let bearer = raw.strip_prefix("Bearer ").unwrap_or(raw);
                self.is_admin_token(bearer)
            }
            None => peer_is_loopback,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(admin: Option<&str>) -> Authenticator {
        let cfg = AuthConfig {
            admin_token: admin.map(str::to_owned),
            agent_tokens: [("s3cret".to_owned(), "billing-bot".to_owned())].into(),
            ..AuthConfig::default()
        };
        Authenticator::new(&cfg, None)
    }

    #[test]
    fn identifies_each_credential_form() {
        let a = auth(Some("adm"));
        let table = [
            (None, "anonymous", IdentityKind::Anonymous),
            (Some(""), "anonymous", IdentityKind::Anonymous),
            (
                Some("Bearer agent:claude"),
                "claude",
                IdentityKind::Declared,
            ),
            (Some("Bearer agent:"), "", IdentityKind::Declared),
            (
                Some("Bearer support-bot"),
                "support-bot",
                IdentityKind::Declared,
            ),
            (Some("support-bot"), "support-bot", IdentityKind::Declared),
            (Some("Bearer s3cret"), "billing-bot", IdentityKind::Token),
            (Some("Bearer adm"), OPERATOR_AGENT, IdentityKind::Operator),
        ];
        for (header, agent, kind) in table {
            let id = a.identify(header);
            assert_eq!((id.agent.as_str(), id.kind), (agent, kind), "{header:?}");
        }
    }

    #[test]
    fn env_admin_token_overrides_config() {
        let cfg = AuthConfig {
            admin_token: Some("from-config".to_owned()),
            ..AuthConfig::default()
        };
        let a = Authenticator::new(&cfg, Some("from-env".to_owned()));
        assert!(a.is_admin_token("from-env"));
        assert!(!a.is_admin_token("from-config"));
        let a = Authenticator::new(&cfg, Some(String::new()));
        assert!(a.is_admin_token("from-config"));
    }

    #[test]
    fn control_plane_needs_token_or_loopback() {
        let open = auth(None);
        assert!(open.control_plane_allowed(None, true));
        assert!(!open.control_plane_allowed(None, false));
        let locked = auth(Some("adm"));
        assert!(!locked.control_plane_allowed(None, true));
        assert!(!locked.control_plane_allowed(Some("Bearer nope"), true));
        assert!(locked.control_plane_allowed(Some("Bearer adm"), false));
    }
}
