//! Getting a spec's text: a file, or a URL fetched through the SSRF guard with a timeout and a
//! size limit. The last good copy of every URL spec is kept in the store (`storage_path`), so a
//! restart works while the spec URL is down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh7_actors::store::Store;

use super::forward::error_chain;

/// Largest spec accepted, fetched or read.
pub const MAX_SPEC_BYTES: usize = 10 * 1024 * 1024;
/// Whole fetch, headers and body (flux7: 30 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches a spec URL. Loopback, private and link-local targets are refused unless
/// `allow_private`.
pub async fn fetch(url: &str, allow_private: bool) -> Result<String, String> {
    mesh7_actors::ssrf::check_url(url, allow_private).map_err(|e| e.to_string())?;
    crate::require_tls_support(url)?;
    let client = mesh7_actors::ssrf::client_builder(allow_private)
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut resp = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/yaml, text/yaml, */*;q=0.5",
        )
        .send()
        .await
        .map_err(|e| fetch_error(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_error(&e))? {
        if bytes.len() + chunk.len() > MAX_SPEC_BYTES {
            return Err(format!("the spec is larger than {MAX_SPEC_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| "the spec is not UTF-8 text".to_owned())
}

fn fetch_error(e: &reqwest::Error) -> String {
    if let Some(refused) = mesh7_actors::ssrf::find(e) {
        return refused.to_string();
    }
    if e.is_timeout() {
        return format!("no answer within {FETCH_TIMEOUT:?}");
    }
    error_chain(e)
}

/// Reads a spec file: relative paths are looked up next to the configuration first, then in
/// the working directory (where flux7 looked).
pub async fn read_file(file: &str, base_dir: &Path) -> Result<String, String> {
    let candidate = base_dir.join(file);
    let path = if Path::new(file).is_relative()
        && tokio::fs::try_exists(&candidate).await.unwrap_or(false)
    {
        candidate
    } else {
        PathBuf::from(file)
    };
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES as u64 {
        return Err(format!(
            "{}: the spec is larger than {MAX_SPEC_BYTES} bytes",
            path.display()
        ));
    }
    tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The last good copy of each URL spec, kept in the store (`storage_path`).
#[derive(Debug, Clone)]
pub struct SpecCache {
    store: Store,
}

/// A cached spec and when it was fetched.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedSpec {
    pub url: String,
    /// RFC 3339, UTC.
    pub fetched_at: String,
    pub text: String,
}

impl SpecCache {
    pub fn new(store: Store) -> SpecCache {
        SpecCache { store }
    }

    /// The cached copy of `url`, if any (an unreadable copy counts as none).
    pub fn get(&self, url: &str) -> Option<CachedSpec> {
        let bytes = self.store.spec(url).ok()??;
        let cached: CachedSpec = serde_json::from_slice(&bytes).ok()?;
        (cached.url == url).then_some(cached)
    }

    /// Stores a good copy, durably.
    pub async fn put(&self, url: &str, text: &str) -> Result<(), String> {
        let entry = CachedSpec {
            url: url.to_owned(),
            fetched_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            text: text.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        self.store
            .put_spec(url, &bytes)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn cache_keeps_the_last_copy_per_url() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SpecCache::new(Store::open(dir.path()).unwrap());
        assert_eq!(cache.get("https://a.example/spec"), None);
        cache.put("https://a.example/spec", "v1").await.unwrap();
        cache.put("https://a.example/spec", "v2").await.unwrap();
        cache.put("https://b.example/spec", "other").await.unwrap();
        let got = cache.get("https://a.example/spec").unwrap();
        assert_eq!(
            (got.url.as_str(), got.text.as_str()),
            ("https://a.example/spec", "v2")
        );
        assert_eq!(cache.get("https://b.example/spec").unwrap().text, "other");
    }
}
