//! Who is calling: turning the credentials of a request into an `Identity`, the first step of
//! the pipeline, shared by every ingress.
//!
//! flux7's rules are kept (`Bearer agent:<id>`, a raw bearer used as the agent id, `anonymous`,
//! and with `auth.jwt` a JWT checked against a JWKS), with these fixes: the admin token is an
//! *operator* identity (its value never becomes an agent id in traces), tokens assigned to
//! agents in `auth.agent_tokens` make an authenticated agent, and a JWT whose `operator_claim`
//! is truthy is an operator too — operators approve and grant, agents cannot.
//!
//! Refused credentials (a bad JWT, `agent:` under JWT without `allow_legacy`) give an
//! *anonymous* identity carrying the reason in `refused`: every check that turns anonymous
//! callers away turns these away too, and the pipeline and `/mcp` answer 401 with the reason.

mod jwks;
mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use mesh7_config::{AuthConfig, Glob, JwtConfig};

pub use jwt::JwtStartError;
use jwt::{JwtAuth, Rejection};

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// No credentials.
    Anonymous,
    /// `Bearer agent:<id>` or a raw bearer: a claim, not a proof.
    Declared,
    /// A token the configuration assigns to this agent, or a valid JWT.
    Token,
    /// The admin token, or a JWT whose `operator_claim` is truthy.
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    pub kind: IdentityKind,
    /// Why the presented credentials were refused; the identity is then anonymous.
    pub refused: Option<String>,
}

impl Identity {
    pub fn is_operator(&self) -> bool {
        self.kind == IdentityKind::Operator
    }

    pub fn is_anonymous(&self) -> bool {
        self.kind == IdentityKind::Anonymous
    }

    fn of(agent: impl Into<String>, kind: IdentityKind) -> Identity {
        Identity {
            agent: agent.into(),
            kind,
            refused: None,
        }
    }

    fn anonymous() -> Identity {
        Identity::of(ANONYMOUS_AGENT, IdentityKind::Anonymous)
    }

    fn refused(message: String) -> Identity {
        Identity {
            refused: Some(message),
            ..Identity::anonymous()
        }
    }
}

/// The agent id of callers without (acceptable) credentials.
pub const ANONYMOUS_AGENT: &str = "anonymous";
/// What a bearer that is neither a JWT nor allowed otherwise gets under `auth.jwt`.
pub const JWT_REQUIRED: &str = "authentication required: present a valid JWT";

/// The agent id given to the admin token on the data plane.
pub const OPERATOR_AGENT: &str = "operator";

/// Resolves credentials. Built once from the `auth` section (and `MESH_ADMIN_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    admin_token: Option<String>,
    agent_tokens: HashMap<String, String>,
    require_authentication: bool,
    /// `supervisor.supervisor_agents`: the agents that may use the supervisor tools over MCP.
    supervisor_agents: Vec<Glob>,
    /// `auth.trust_declared_agents`: a self-declared agent id is enough for those tools.
    trust_declared_agents: bool,
    /// `auth.jwt`: JWTs replace self-declared ids.
    jwt: Option<Arc<JwtAuth>>,
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
            supervisor_agents: Vec::new(),
            trust_declared_agents: auth.trust_declared_agents,
            jwt: None,
        }
    }

    /// Turns on JWT authentication (`auth.jwt`): fetches the JWKS, which must answer within
    /// 10 s with at least one usable key, and refreshes it every `refresh` in the background.
    /// Must run inside a Tokio runtime.
    pub async fn with_jwt(mut self, cfg: &JwtConfig) -> Result<Self, JwtStartError> {
        self.jwt = Some(Arc::new(JwtAuth::start(cfg).await?));
        Ok(self)
    }

    /// Sets `supervisor.supervisor_agents` (globs).
    #[must_use]
    pub fn with_supervisor_agents(mut self, patterns: &[String]) -> Self {
        self.supervisor_agents = patterns.iter().map(|p| Glob::new(p)).collect();
        self
    }

    /// Whether `agent` matches a `supervisor.supervisor_agents` glob. Matching is not proof:
    /// the MCP layer also asks how the agent id was established.
    pub fn is_supervisor_agent(&self, agent: &str) -> bool {
        self.supervisor_agents.iter().any(|g| g.matches(agent))
    }

    /// `auth.trust_declared_agents`.
    pub fn trusts_declared_agents(&self) -> bool {
        self.trust_declared_agents
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin_token.is_some()
    }

    pub fn requires_authentication(&self) -> bool {
        self.require_authentication
    }

    /// The identity behind an `Authorization` header value (or its absence). A JWT signed by
    /// a key the JWKS does not know yet is refused, and starts a (rate-limited) refetch in the
    /// background; see [`Authenticator::identify_async`].
    pub fn identify(&self, authorization: Option<&str>) -> Identity {
        match self.resolve(authorization) {
            Ok(identity) => identity,
            Err(rejection) => {
                if let (Rejection::UnknownKid(kid), Some(jwt)) = (&rejection, &self.jwt) {
                    jwt.jwks.refetch_in_background(kid);
                }
                Identity::refused(rejection.message())
            }
        }
    }

    /// Like [`Authenticator::identify`], but a JWT whose `kid` is unknown waits for the JWKS
    /// refetch it causes (one per 30 s at most, bounded by the 10 s fetch timeout), so a key
    /// rotated in since the last refresh works at once.
    pub async fn identify_async(&self, authorization: Option<&str>) -> Identity {
        let rejection = match self.resolve(authorization) {
            Ok(identity) => return identity,
            Err(rejection) => rejection,
        };
        if let (Rejection::UnknownKid(kid), Some(jwt)) = (&rejection, &self.jwt)
            && jwt.jwks.refetch_for(kid).await
        {
            return match self.resolve(authorization) {
                Ok(identity) => identity,
                Err(again) => Identity::refused(again.message()),
            };
        }
        Identity::refused(rejection.message())
    }

    fn resolve(&self, authorization: Option<&str>) -> Result<Identity, Rejection> {
        let raw = authorization.unwrap_or("");
        // flux7 strips a literal, case-sensitive "Bearer " prefix and otherwise uses the value.
        let bearer = raw.strip_prefix("Bearer ").unwrap_or(raw);
        if bearer.is_empty() {
            return Ok(Identity::anonymous());
        }
        if self.is_admin_token(bearer) {
            return Ok(Identity::of(OPERATOR_AGENT, IdentityKind::Operator));
        }
        if let Some(agent) = self.agent_tokens.get(bearer) {
            return Ok(Identity::of(agent.clone(), IdentityKind::Token));
        }
        let Some(jwt) = &self.jwt else {
            let agent = bearer.strip_prefix("agent:").unwrap_or(bearer);
            return Ok(Identity::of(agent, IdentityKind::Declared));
        };
        if let Some(agent) = bearer.strip_prefix("agent:") {
            return if jwt.allow_legacy {
                Ok(Identity::of(agent, IdentityKind::Declared))
            } else {
                Err(Rejection::Invalid(JWT_REQUIRED.to_owned()))
            };
        }
        if bearer.matches('.').count() != 2 {
            return Err(Rejection::Invalid(JWT_REQUIRED.to_owned()));
        }
        let claims = jwt.verify(bearer)?;
        let kind = if claims.operator {
            IdentityKind::Operator
        } else {
            IdentityKind::Token
        };
        Ok(Identity::of(claims.agent, kind))
    }

    /// Whether `bearer` is the admin token, compared in constant time.
    pub fn is_admin_token(&self, bearer: &str) -> bool {
        self.admin_token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), bearer.as_bytes()))
    }

    /// The control-plane gate: an operator (the admin token or an operator JWT) always; else,
    /// when no admin token is set, a loopback peer.
    pub fn control_plane_allowed(
        &self,
        authorization: Option<&str>,
        peer_is_loopback: bool,
    ) -> bool {
        (self.admin_token.is_none() && peer_is_loopback)
            || self.identify(authorization).is_operator()
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

#[cfg(test)]
mod jwt_tests {
    use super::*;

    /// JWT on, with an empty key set: what is decided before any signature is checked.
    fn with_jwt(allow_legacy: bool) -> Authenticator {
        let cfg = AuthConfig {
            admin_token: Some("adm".to_owned()),
            agent_tokens: [("s3cret".to_owned(), "billing-bot".to_owned())].into(),
            ..AuthConfig::default()
        };
        let jwt = JwtConfig {
            jwks_url: "http://127.0.0.1:9/jwks.json".to_owned(),
            allow_legacy,
            ..JwtConfig::default()
        };
        Authenticator {
            jwt: Some(Arc::new(JwtAuth::new(
                &jwt,
                jwks::Jwks::fixed(jwks::KeySet::new()),
            ))),
            ..Authenticator::new(&cfg, None)
        }
    }

    #[test]
    fn under_jwt_only_tokens_and_the_legacy_form_if_allowed_pass() {
        // A JWT signed with RS256, kid "k1", unknown to the empty key set.
        let unknown = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln";
        let cases = [
            (false, None, Ok(("anonymous", IdentityKind::Anonymous))),
            (
                false,
                Some("Bearer adm"),
                Ok(("operator", IdentityKind::Operator)),
            ),
            (
                false,
                Some("Bearer s3cret"),
                Ok(("billing-bot", IdentityKind::Token)),
            ),
            (
                false,
                Some("Bearer agent:claude"),
                Err(JWT_REQUIRED.to_owned()),
            ),
            (
                true,
                Some("Bearer agent:claude"),
                Ok(("claude", IdentityKind::Declared)),
            ),
            (
                true,
                Some("Bearer support-bot"),
                Err(JWT_REQUIRED.to_owned()),
            ),
            (false, Some("Bearer a.b.c.d"), Err(JWT_REQUIRED.to_owned())),
            (
                false,
                Some("Bearer a.b.c"),
                Err("invalid token: malformed token".to_owned()),
            ),
            (
                false,
                Some("Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln"),
                Err("invalid token: algorithm HS256 is not accepted (RS256 or ES256)".to_owned()),
            ),
            (
                false,
                Some("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
                Err("invalid token: no kid in the token header".to_owned()),
            ),
            (
                false,
                Some(&format!("Bearer {unknown}")),
                Err("invalid token: unknown kid \"k1\"".to_owned()),
            ),
        ];
        for (legacy, header, expected) in cases {
            let id = with_jwt(legacy).identify(header);
            let got = match id.refused.clone() {
                Some(message) => {
                    assert!(id.is_anonymous(), "{header:?}: refused means anonymous");
                    Err(message)
                }
                None => Ok((id.agent.as_str(), id.kind)),
            };
            assert_eq!(got, expected, "{header:?} (allow_legacy: {legacy})");
        }
    }

    #[test]
    fn refused_credentials_never_open_the_control_plane() {
        let a = with_jwt(false);
        assert!(!a.control_plane_allowed(Some("Bearer agent:claude"), false));
        assert!(!a.control_plane_allowed(Some("Bearer a.b.c"), false));
        assert!(a.control_plane_allowed(Some("Bearer adm"), false));
    }
}
