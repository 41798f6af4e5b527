//! The key set JWTs are checked against (`auth.jwt.jwks_url`): fetched at start-up, refreshed
//! in the background, and read without waiting by every request.
//!
//! Invariants:
//! - Reads never wait: the current set is an `ArcSwap` snapshot, replaced whole by a fetch.
//! - A fetch that fails (transport error, status other than 200, unreadable or oversized body,
//!   no usable key) changes nothing: the last good set stays in force.
//! - Usable keys have a `kid` and are RSA (for RS256) or EC P-256 (for ES256); a key whose
//!   `use` is not `sig` or whose `alg` is another algorithm is skipped.
//! - An unknown `kid` may trigger one refetch, at most once per `REFETCH_COOLDOWN` and one at a
//!   time (flux7 waited for the next periodic refresh). Requests with unknown kids cannot make
//!   mesh7 hammer the key server.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The whole fetch, connection included (flux7).
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two refetches caused by unknown kids.
pub(crate) const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// A larger answer is not a key set.
const MAX_BODY: usize = 1024 * 1024;

/// A usable key and the one algorithm it verifies.
pub(crate) struct Key {
    pub(crate) decoding: DecodingKey,
    pub(crate) alg: Algorithm,
}

/// Usable keys by `kid`.
pub(crate) type KeySet = HashMap<String, Key>;

pub(crate) struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// Held while a refetch for an unknown kid runs; the time of the last one.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the key set once; an error means there is nothing to check tokens against.
    pub(crate) async fn fetch(url: &str) -> Result<Arc<Jwks>, String> {
        crate::require_tls_support(url)?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let keys = download(&client, url).await?;
        Ok(Arc::new(Jwks {
            url: url.to_owned(),
            client,
            keys: ArcSwap::from_pointee(keys),
            refetch: tokio::sync::Mutex::new(None),
        }))
    }

    /// A set that is never fetched again (unit tests).
    #[cfg(test)]
    pub(crate) fn fixed(keys: KeySet) -> Arc<Jwks> {
        Arc::new(Jwks {
            url: "http://127.0.0.1:9/jwks.json".to_owned(),
            client: reqwest::Client::new(),
            keys: ArcSwap::from_pointee(keys),
            refetch: tokio::sync::Mutex::new(Some(Instant::now())),
        })
    }

    /// The current snapshot.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Fetches again; on success the new set replaces the old one whole (removed keys go).
    async fn refresh(&self) -> Result<usize, String> {
        let keys = download(&self.client, &self.url).await?;
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// Refreshes every `every` in the background until the set is dropped. Must be called
    /// inside a Tokio runtime.
    pub(crate) fn keep_fresh(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Jwks> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(jwks) = weak.upgrade() else { return };
                match jwks.refresh().await {
                    Ok(n) => tracing::debug!(keys = n, "JWKS refreshed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the last keys");
                    }
                }
            }
        });
    }

    /// An unknown `kid`: refetches unless one did in the last `REFETCH_COOLDOWN`, and says
    /// whether the kid is known now. Concurrent callers share one fetch.
    pub(crate) async fn refetch_for(&self, kid: &str) -> bool {
        let mut last = self.refetch.lock().await;
        if self.keys.load().contains_key(kid) {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < REFETCH_COOLDOWN) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(n) => tracing::info!(kid, keys = n, "JWKS refetched for an unknown kid"),
            Err(e) => tracing::warn!(kid, error = %e, "JWKS refetch failed; keeping the last keys"),
        }
        self.keys.load().contains_key(kid)
    }

    /// `refetch_for` without waiting for it (when the caller cannot wait).
    pub(crate) fn refetch_in_background(self: &Arc<Self>, kid: &str) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (jwks, kid) = (self.clone(), kid.to_owned());
            runtime.spawn(async move { jwks.refetch_for(&kid).await });
        }
    }
}

async fn download(client: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("{url} answered {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{url} answered more than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body)
}

/// The usable keys of a JWKS document; an error when there is none.
pub(crate) fn parse(body: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JWKS: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("invalid JWKS: no \"keys\" array".to_owned());
    };
    // Each key is read on its own: one of an unknown type must not hide the others.
    let usable: KeySet = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| usable(&jwk))
        .collect();
    if usable.is_empty() {
        return Err(
            "no usable key in the JWKS (RSA or EC P-256 signing keys with a kid)".to_owned(),
        );
    }
    Ok(usable)
}

fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let declared_fits = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_fits {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { decoding, alg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_usable_signing_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "r2", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "r512", "alg": "RS512", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w"}
        ]});
        let keys = parse(doc.to_string().as_bytes()).unwrap();
        let mut kids: Vec<(&str, Algorithm)> =
            keys.iter().map(|(k, v)| (k.as_str(), v.alg)).collect();
        kids.sort_by_key(|(k, _)| *k);
        assert_eq!(
            kids,
            [
                ("e1", Algorithm::ES256),
                ("r1", Algorithm::RS256),
                ("r2", Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        let cases = [
            (r#"{"keys": []}"#, "no usable key"),
            (
                r#"{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}"#,
                "no usable key",
            ),
            (r#"{"nokeys": 1}"#, "invalid JWKS: no \"keys\" array"),
            ("<html>", "invalid JWKS: "),
        ];
        for (body, expected) in cases {
            let err = parse(body.as_bytes()).err().unwrap();
            assert!(err.starts_with(expected), "{body}: {err}");
        }
    }

    #[tokio::test]
    async fn an_https_key_set_needs_the_tls_build() {
        // Port 1 on loopback: nothing answers, so a TLS build fails to connect instead.
        let err = Jwks::fetch("https://127.0.0.1:1/jwks.json")
            .await
            .unwrap_err();
        let refused = err.contains("built with the `tls` feature");
        assert_eq!(refused, !cfg!(feature = "tls"), "{err}");
    }
}
