//! OpenAPI import: each `openapi:` entry (or `mesh7 discover --openapi`) becomes tools, one per
//! operation; a call to one is forwarded to the backend over HTTP by the pipeline's forward step,
//! like every other tool call.
//!
//! `spec` parses documents into operations, `forward` maps arguments onto HTTP requests and sends
//! them, `source` reads files and fetches URLs (SSRF guard, timeout, size limit, last-good cache).
//!
//! Trust: a spec URL, and the backend a spec chooses, are guarded (no loopback, private or
//! link-local address) unless the entry sets `allow_private: true`. A `file:` spec with an
//! explicit `backend_url` is entirely the operator's choice and is not guarded.

pub mod forward;
pub mod source;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use mesh7_actors::store::Store;
use mesh7_config::OpenApiConfig;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use self::forward::BackendResponse;
use self::source::SpecCache;
use self::spec::Operation;
use crate::error::PipelineError;

/// Time a backend call may take when the entry sets no `timeout` (flux7: 30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest backend response read.
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenApiError {
    /// One entry could not be imported (flux7's text: `load OpenAPI <url|file>: <err>`).
    #[error("load OpenAPI {spec}: {message}")]
    Load { spec: String, message: String },
    #[error("openapi: two tools are named {name:?}: {first} and {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
}

/// Where an entry's calls go, shared by its tools: pooled clients per entry.
pub struct Backend {
    pub base_url: String,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    clients: ThreadClients,
    /// The entry's `headers:` (e.g. credentials); agents never see them.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// The calling thread's client.
    fn client(&self) -> Result<reqwest::Client, PipelineError> {
        self.clients
            .get()
            .map_err(|e| PipelineError::Forward(format!("HTTP client: {e}")))
    }
}

/// One pooled client per calling thread. A pooled connection is driven by the runtime that
/// opened it: a client shared by the HTTP workers (one runtime each) would send most calls
/// through another worker's thread, two cross-thread wake-ups per call. The map holds one
/// entry per thread that ever called (the workers), so it stays small.
struct ThreadClients {
    trusted: bool,
    clients: Mutex<HashMap<ThreadId, reqwest::Client>>,
}

impl ThreadClients {
    /// Builds the first client at once, so a configuration it cannot serve fails at load.
    fn new(trusted: bool) -> Result<Self, reqwest::Error> {
        let first = Self::build(trusted)?;
        Ok(Self {
            trusted,
            clients: Mutex::new(HashMap::from([(std::thread::current().id(), first)])),
        })
    }

    fn build(trusted: bool) -> Result<reqwest::Client, reqwest::Error> {
        mesh7_actors::ssrf::client_builder(trusted)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
    }

    fn get(&self) -> Result<reqwest::Client, reqwest::Error> {
        let id = std::thread::current().id();
        // Every change is one insert: the map is whole even if a holder panicked.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&id) {
            return Ok(client.clone());
        }
        let client = Self::build(self.trusted)?;
        clients.insert(id, client.clone());
        Ok(client)
    }
}

/// One imported operation.
#[derive(Debug)]
pub struct OpenApiTool {
    /// The tool name, with the entry's namespace (`<namespace>.<name>`) when it has one.
    pub name: String,
    /// The catalog group: the namespace, else `openapi`.
    pub group: String,
    /// The spec's `url` or `file`, as configured.
    pub spec: String,
    pub operation: Operation,
    pub backend: Arc<Backend>,
}

impl OpenApiTool {
    /// Builds the request from the arguments and sends it. Argument errors are the caller's
    /// (400); the backend's own status, whatever it is, comes back with its body.
    pub async fn call(
        &self,
        args: &Value,
        trace_id: &str,
    ) -> Result<BackendResponse, PipelineError> {
        let req = forward::build(&self.operation, &self.backend.base_url, args)
            .map_err(PipelineError::InvalidRequest)?;
        forward::send(&self.backend, req, trace_id).await
    }

    /// flux7's `/tools` `params`: `[{name, in, type, required}]`, the body as `in: body`.
    pub fn params_view(&self) -> Value {
        let mut out: Vec<Value> = self
            .operation
            .params
            .iter()
            .map(|p| {
                json!({"name": p.name, "in": p.location.as_str(), "type": p.type_name(), "required": p.required})
            })
            .collect();
        if let Some(body) = &self.operation.body {
            out.push(
                json!({"name": "body", "in": "body", "type": "object", "required": body.required}),
            );
        }
        Value::Array(out)
    }

    /// MCP tool annotations from the HTTP method's semantics.
    pub fn annotations(&self) -> Value {
        let m = self.operation.method.as_str();
        json!({
            "readOnlyHint": m == "GET",
            "destructiveHint": m == "DELETE",
            "idempotentHint": matches!(m, "GET" | "PUT" | "DELETE"),
            "openWorldHint": true,
        })
    }

    /// `GET /pets/{id}` (petstore.yaml): how errors and discover name an operation.
    pub fn label(&self) -> String {
        format!(
            "{} {} ({})",
            self.operation.method, self.operation.path, self.spec
        )
    }
}

/// What an import needs besides the entries.
#[derive(Debug, Clone, Default)]
pub struct LoadContext {
    /// Relative `file:` specs are looked up here first (the configuration's directory).
    pub base_dir: PathBuf,
    /// Last-good copies of URL specs (`storage_path`), when configured.
    pub cache: Option<SpecCache>,
}

/// Imports every entry, in order; any failure, or two tools with one name, stops the import.
pub async fn load(
    entries: &[OpenApiConfig],
    ctx: &LoadContext,
) -> Result<Vec<Arc<OpenApiTool>>, OpenApiError> {
    let mut tools: Vec<Arc<OpenApiTool>> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries {
        for tool in load_entry(entry, ctx).await? {
            if let Some(first) = seen.get(&tool.name) {
                return Err(OpenApiError::Duplicate {
                    name: tool.name.clone(),
                    first: first.clone(),
                    second: tool.label(),
                });
            }
            seen.insert(tool.name.clone(), tool.label());
            tools.push(Arc::new(tool));
        }
    }
    Ok(tools)
}

/// Imports one entry.
pub async fn load_entry(
    entry: &OpenApiConfig,
    ctx: &LoadContext,
) -> Result<Vec<OpenApiTool>, OpenApiError> {
    let url = entry.url.as_deref().filter(|u| !u.is_empty());
    let file = entry.file.as_deref().filter(|f| !f.is_empty());
    let spec_name = url.or(file).unwrap_or("").to_owned();
    let fail = |message: String| OpenApiError::Load {
        spec: spec_name.clone(),
        message,
    };

    let (doc, spec_url) = match (url, file) {
        (Some(url), None) => (
            fetch_document(url, entry.allow_private, ctx.cache.as_ref())
                .await
                .map_err(fail)?,
            Some(url::Url::parse(url).map_err(|e| fail(e.to_string()))?),
        ),
        (None, Some(file)) => {
            let text = source::read_file(file, &ctx.base_dir).await.map_err(fail)?;
            (
                spec::parse_document(&text).map_err(|e| fail(e.to_string()))?,
                None,
            )
        }
        _ => return Err(fail("set url or file, not both".to_owned())),
    };
    let operations = spec::operations(&doc).map_err(|e| fail(e.to_string()))?;

    let explicit = entry
        .backend_url
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty());
    let base_url = match explicit {
        Some(b) => b.to_owned(),
        None => spec::base_url(&doc, spec_url.as_ref()).ok_or_else(|| {
            fail("the spec declares no usable server URL: set backend_url".to_owned())
        })?,
    };
    let trusted = entry.allow_private || (file.is_some() && explicit.is_some());
    mesh7_actors::ssrf::check_url(&base_url, trusted)
        .map_err(|e| fail(format!("backend {base_url}: {e}")))?;
    crate::require_tls_support(&base_url).map_err(fail)?;

    let timeout = match entry.timeout.as_deref() {
        Some(t) => mesh7_config::duration::parse(t)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| fail(format!("invalid timeout {t:?}")))?,
        None => DEFAULT_TIMEOUT,
    };
    let mut headers = Vec::new();
    for (k, v) in &entry.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| fail(format!("headers: invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| fail(format!("headers: invalid value for {k:?}")))?;
        headers.push((name, value));
    }
    let clients = ThreadClients::new(trusted).map_err(|e| fail(format!("HTTP client: {e}")))?;
    let backend = Arc::new(Backend {
        base_url: base_url.trim_end_matches('/').to_owned(),
        timeout,
        max_response_bytes: MAX_RESPONSE_BYTES,
        clients,
        headers,
    });

    let namespace = entry.namespace.as_deref().filter(|n| !n.is_empty());
    Ok(operations
        .into_iter()
        .map(|operation| OpenApiTool {
            name: match namespace {
                Some(ns) => format!("{ns}.{}", operation.name),
                None => operation.name.clone(),
            },
            group: namespace.unwrap_or("openapi").to_owned(),
            spec: spec_name.clone(),
            operation,
            backend: backend.clone(),
        })
        .collect())
}

/// Fetches and parses a URL spec; on success the copy is cached, on failure the cached copy
/// (if any) is used and the fallback logged.
async fn fetch_document(
    url: &str,
    allow_private: bool,
    cache: Option<&SpecCache>,
) -> Result<Value, String> {
    let fetched = match source::fetch(url, allow_private).await {
        Ok(text) => spec::parse_document(&text)
            .and_then(|doc| spec::operations(&doc).map(|_| (doc, text)))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match (fetched, cache) {
        (Ok((doc, text)), Some(cache)) => {
            if let Err(e) = cache.put(url, &text).await {
                tracing::warn!(url, error = %e, "OpenAPI spec: cannot cache the fetched copy");
            }
            Ok(doc)
        }
        (Ok((doc, _)), None) => Ok(doc),
        (Err(e), Some(cache)) => {
            let Some(cached) = cache.get(url) else {
                return Err(e);
            };
            // An SSRF refusal is a configuration decision, not an outage: never bypassed.
            if e.starts_with("ssrf:") {
                return Err(e);
            }
            tracing::warn!(url, error = %e, fetched_at = %cached.fetched_at,
                "OpenAPI spec unavailable: using the last good copy");
            spec::parse_document(&cached.text).map_err(|ce| format!("{e} (cached copy: {ce})"))
        }
        (Err(e), None) => Err(e),
    }
}

/// The context for a configuration: its directory, and the spec cache in its store.
pub fn context_for(config_path: &Path, store: Option<Store>) -> LoadContext {
    let base_dir = match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    LoadContext {
        cache: store.map(SpecCache::new),
        base_dir,
    }
}
