//! JWT authentication (`auth.jwt`): a bearer with exactly two dots is a JWT, checked against the
//! JWKS; its agent comes from `agent_claim` and, when `operator_claim` is truthy, it is an
//! operator.
//!
//! What a token must have: a `kid` known to the JWKS, `alg` RS256 (RSA key) or ES256 (P-256
//! key), a valid signature, an `exp` in the future (no leeway, as flux7), an `nbf` in the past
//! when present, `iss` equal to `issuer` and `aud` containing `audience` when those are set,
//! and a string `agent_claim`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use mesh7_config::{JwtConfig, duration};
use serde_json::{Map, Value};

use super::jwks::Jwks;

/// How often the JWKS is fetched again when `refresh` is not set (flux7).
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Why JWT authentication could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtStartError {
    #[error("auth.jwt.refresh: {0}")]
    Refresh(String),
    #[error("jwt auth: initial JWKS fetch: {0}")]
    Fetch(String),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) agent: String,
    pub(crate) operator: bool,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Signed with a key the JWKS does not have (yet): worth one refetch.
    UnknownKid(String),
    /// The message the caller gets.
    Invalid(String),
}

impl Rejection {
    pub(crate) fn message(&self) -> String {
        match self {
            Rejection::UnknownKid(kid) => format!("invalid token: unknown kid \"{kid}\""),
            Rejection::Invalid(message) => message.clone(),
        }
    }
}

fn invalid(detail: impl std::fmt::Display) -> Rejection {
    Rejection::Invalid(format!("invalid token: {detail}"))
}

#[derive(Debug)]
pub(crate) struct JwtAuth {
    pub(crate) jwks: Arc<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    agent_claim: String,
    operator_claim: Option<String>,
    pub(crate) allow_legacy: bool,
}

impl JwtAuth {
    /// Fetches the JWKS (start-up fails without it) and keeps it fresh in the background.
    pub(crate) async fn start(cfg: &JwtConfig) -> Result<JwtAuth, JwtStartError> {
        let refresh = match cfg.refresh.as_deref() {
            Some(r) => duration::parse(r).map_err(JwtStartError::Refresh)?,
            None => DEFAULT_REFRESH,
        };
        if refresh.is_zero() {
            return Err(JwtStartError::Refresh("must be greater than 0".to_owned()));
        }
        let jwks = Jwks::fetch(&cfg.jwks_url)
            .await
            .map_err(JwtStartError::Fetch)?;
        jwks.keep_fresh(refresh);
        Ok(JwtAuth::new(cfg, jwks))
    }

    pub(crate) fn new(cfg: &JwtConfig, jwks: Arc<Jwks>) -> JwtAuth {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        JwtAuth {
            jwks,
            issuer: set(&cfg.issuer),
            audience: set(&cfg.audience),
            agent_claim: set(&cfg.agent_claim).unwrap_or_else(|| "sub".to_owned()),
            operator_claim: set(&cfg.operator_claim),
            allow_legacy: cfg.allow_legacy,
        }
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let header = decode_header(token).map_err(|_| invalid("malformed token"))?;
        let kid = header
            .kid
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("no kid in the token header"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        let keys = self.jwks.keys();
        let key = keys
            .get(&kid)
            .ok_or_else(|| Rejection::UnknownKid(kid.clone()))?;
        if key.alg != header.alg {
            return Err(invalid(format!(
                "key \"{kid}\" is a {:?} key, not {:?}",
                key.alg, header.alg
            )));
        }
        let claims = decode::<Map<String, Value>>(token, &key.decoding, &self.validation(key.alg))
            .map_err(|e| describe(e.kind()))?
            .claims;
        let agent = match claims.get(&self.agent_claim) {
            None | Some(Value::Null) => {
                return Err(Rejection::Invalid(format!(
                    "missing claim \"{}\"",
                    self.agent_claim
                )));
            }
            Some(Value::String(agent)) => agent.clone(),
            Some(_) => {
                return Err(Rejection::Invalid(format!(
                    "claim \"{}\" is not a string",
                    self.agent_claim
                )));
            }
        };
        let operator = self
            .operator_claim
            .as_ref()
            .is_some_and(|c| claims.get(c).is_some_and(truthy));
        Ok(Claims { agent, operator })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn describe(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::ExpiredSignature => invalid("token is expired"),
        ErrorKind::ImmatureSignature => invalid("token is not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => invalid("wrong issuer"),
        ErrorKind::InvalidAudience => invalid("wrong audience"),
        ErrorKind::InvalidSignature => invalid("signature is invalid"),
        ErrorKind::MissingRequiredClaim(c) => invalid(format!("no \"{c}\" claim")),
        ErrorKind::InvalidClaimFormat(c) => invalid(format!("claim \"{c}\" is malformed")),
        ErrorKind::InvalidAlgorithm => invalid("algorithm does not match the key"),
        _ => invalid("malformed token"),
    }
}

/// `true`, a number other than 0, or a string other than empty, `false` or `0`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0"),
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthy_operator_claims() {
        let cases = [
            (json!(true), true),
            (json!(false), false),
            (json!(1), true),
            (json!(0), false),
            (json!(0.0), false),
            (json!("yes"), true),
            (json!("true"), true),
            (json!("FALSE"), false),
            (json!("0"), false),
            (json!(""), false),
            (json!(null), false),
            (json!(["operator"]), false),
            (json!({}), false),
        ];
        for (value, expected) in cases {
            assert_eq!(truthy(&value), expected, "{value}");
        }
    }

    #[test]
    fn library_errors_read_as_invalid_token_details() {
        let cases = [
            (
                ErrorKind::ExpiredSignature,
                "invalid token: token is expired",
            ),
            (ErrorKind::InvalidIssuer, "invalid token: wrong issuer"),
            (ErrorKind::InvalidAudience, "invalid token: wrong audience"),
            (
                ErrorKind::InvalidSignature,
                "invalid token: signature is invalid",
            ),
            (
                ErrorKind::MissingRequiredClaim("exp".into()),
                "invalid token: no \"exp\" claim",
            ),
            (ErrorKind::InvalidToken, "invalid token: malformed token"),
        ];
        for (kind, message) in cases {
            assert_eq!(describe(&kind).message(), message);
        }
        assert_eq!(
            Rejection::UnknownKid("k9".into()).message(),
            "invalid token: unknown kid \"k9\""
        );
    }
}
