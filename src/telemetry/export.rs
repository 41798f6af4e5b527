//! The span exporter: a bounded queue in front of one thread that owns the export target.
//!
//! The queue is bounded in spans (`OTEL_BSP_MAX_QUEUE_SIZE`); handing spans over never waits.
//! The thread takes everything queued (up to `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans) and
//! exports it as one batch, so batches grow with load and a lone call is exported at once.
//! It owns the blocking HTTP client of opentelemetry-otlp, which must live outside any async
//! runtime; no actix worker ever waits on the collector.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mesh7_actors::trace::Redactor;
use opentelemetry::trace::Status;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

const DEFAULT_QUEUE_SPANS: usize = 2048;
const DEFAULT_BATCH_SPANS: usize = 512;
/// flux7's export timeout; the OTLP environment variables override it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The OTLP/JSON file is renamed to `<file>.old` at this size, as the trace file is.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot open {}: {error}", .path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("invalid OTLP endpoint {url}: {message}")]
    Endpoint { url: String, message: String },
    #[error("{0}: https needs a build with the `tls` feature")]
    NoTls(String),
    #[error("cannot start the exporter thread: {0}")]
    Spawn(io::Error),
    #[error("the exporter thread stopped while starting")]
    Died,
}

/// Where spans go, from `otel_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// OTLP/HTTP protobuf to this full URL (`…/v1/traces`).
    Otlp(String),
    /// OTLP/JSON lines on stderr (`stdout` in the config: stdout is the MCP stdio wire).
    Stderr,
    /// OTLP/JSON lines appended to a file.
    File(PathBuf),
}

impl Target {
    pub(super) fn parse(endpoint: &str) -> Result<Target, TelemetryError> {
        let endpoint = endpoint.trim();
        if endpoint == "stdout" {
            return Ok(Target::Stderr);
        }
        let is_https = endpoint.starts_with("https://");
        if !(is_https || endpoint.starts_with("http://")) {
            return Ok(Target::File(PathBuf::from(endpoint)));
        }
        if is_https && !cfg!(feature = "tls") {
            return Err(TelemetryError::NoTls(endpoint.to_owned()));
        }
        let base = endpoint.trim_end_matches('/');
        Ok(Target::Otlp(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }))
    }
}

enum Job {
    Spans(Vec<SpanData>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The request side: the queue and its bound.
pub(super) struct Exporter {
    tx: mpsc::Sender<Job>,
    /// Spans handed over and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the thread and waits until it has opened its target.
    pub(super) async fn start(
        endpoint: &str,
        resource: Resource,
        metrics: Arc<Metrics>,
        redact: Option<Arc<Redactor>>,
    ) -> Result<Exporter, TelemetryError> {
        let target = Target::parse(endpoint)?;
        let max_queue = env_usize("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SPANS);
        let max_batch = env_usize("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH_SPANS);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            rx,
            queued: queued.clone(),
            metrics: metrics.clone(),
            max_batch: max_batch.max(1),
            redact,
        };
        std::thread::Builder::new()
            .name("mesh7-otel-export".to_owned())
            .spawn(move || match Sink::open(target, &resource) {
                Ok(sink) => {
                    let _ = ready_tx.send(Ok(()));
                    worker.run(sink);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(TelemetryError::Spawn)?;
        ready_rx.await.map_err(|_| TelemetryError::Died)??;
        Ok(Exporter {
            tx,
            queued,
            max_queue: max_queue.max(1),
            metrics,
        })
    }

    /// Hands one call's spans over, or drops (and counts) them when the queue is full or the
    /// thread is gone. Never waits.
    pub(super) fn submit(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let before = self.queued.fetch_add(n, Ordering::SeqCst);
        if before + n > self.max_queue || self.tx.send(Job::Spans(spans)).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            self.metrics.otel_spans_dropped(n as u64);
        }
    }

    pub(super) async fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }

    pub(super) async fn shutdown(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Shutdown(tx)).is_err() {
            return;
        }
        if tokio::time::timeout(within, rx).await.is_err() {
            tracing::warn!(
                "OpenTelemetry export did not finish in time: the spans still queued are lost"
            );
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The thread

struct Worker {
    rx: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    redact: Option<Arc<Redactor>>,
}

impl Worker {
    fn run(self, mut sink: Sink) {
        let mut failing = false;
        while let Ok(first) = self.rx.recv() {
            let mut calls = Vec::new();
            let mut spans = 0;
            let mut flushed = Vec::new();
            let mut stop = None;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Spans(s) => {
                        spans += s.len();
                        calls.push(s);
                    }
                    Job::Flush(reply) => flushed.push(reply),
                    Job::Shutdown(reply) => {
                        stop = Some(reply);
                        break;
                    }
                }
                if spans < self.max_batch {
                    next = self.rx.try_recv().ok();
                }
            }
            self.queued.fetch_sub(spans, Ordering::SeqCst);
            if let Some(redactor) = &self.redact {
                redact_errors(redactor, &mut calls);
            }
            if !calls.is_empty() {
                match sink.export(calls) {
                    Ok(()) => {
                        self.metrics.otel_spans_exported(spans as u64);
                        if failing {
                            tracing::info!("OpenTelemetry export works again");
                            failing = false;
                        }
                    }
                    Err(error) => {
                        self.metrics.otel_spans_dropped(spans as u64);
                        // Said once per outage; the drop counter tells the rest.
                        if !failing {
                            tracing::warn!(%error, spans, "OpenTelemetry export failed: spans dropped");
                            failing = true;
                        }
                    }
                }
            }
            for reply in flushed {
                let _ = reply.send(());
            }
            if let Some(reply) = stop {
                sink.shutdown();
                let _ = reply.send(());
                return;
            }
        }
        sink.shutdown();
    }
}

/// `trace.redact`'s patterns applied to what a span quotes of a call's error: its
/// `error.message` attribute and its status.
fn redact_errors(redactor: &Redactor, calls: &mut [Vec<SpanData>]) {
    for span in calls.iter_mut().flatten() {
        for kv in &mut span.attributes {
            if kv.key.as_str() == "error.message"
                && let opentelemetry::Value::String(text) = &kv.value
                && let Some(redacted) = redactor.text(text.as_str())
            {
                kv.value = opentelemetry::Value::String(redacted.into());
            }
        }
        if let Status::Error { description } = &mut span.status
            && let Some(redacted) = redactor.text(description)
        {
            *description = redacted.into();
        }
    }
}

enum Sink {
    Otlp(opentelemetry_otlp::SpanExporter),
    Json {
        out: JsonOut,
        resource: ResourceAttributesWithSchema,
    },
}

enum JsonOut {
    Stderr,
    File(JsonFile),
}

impl Sink {
    fn open(target: Target, resource: &Resource) -> Result<Sink, TelemetryError> {
        match target {
            Target::Otlp(url) => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(url.clone());
                let env_timeout = [
                    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                ]
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|s| s.trim().parse::<u64>().is_ok()));
                if !env_timeout {
                    builder = builder.with_timeout(DEFAULT_TIMEOUT);
                }
                let mut exporter = builder.build().map_err(|e| TelemetryError::Endpoint {
                    url,
                    message: e.to_string(),
                })?;
                exporter.set_resource(resource);
                Ok(Sink::Otlp(exporter))
            }
            Target::Stderr => Ok(Sink::Json {
                out: JsonOut::Stderr,
                resource: resource.into(),
            }),
            Target::File(path) => {
                let file = JsonFile::open(path.clone())
                    .map_err(|error| TelemetryError::Open { path, error })?;
                Ok(Sink::Json {
                    out: JsonOut::File(file),
                    resource: resource.into(),
                })
            }
        }
    }

    /// Exports calls' spans: one OTLP/HTTP request for the batch, or one OTLP/JSON line per
    /// call (as flux7 writes one document per entry).
    fn export(&mut self, calls: Vec<Vec<SpanData>>) -> Result<(), String> {
        match self {
            Sink::Otlp(exporter) => {
                let batch = calls.into_iter().flatten().collect();
                futures_executor::block_on(exporter.export(batch)).map_err(|e| e.to_string())
            }
            Sink::Json { out, resource } => {
                let mut text = Vec::new();
                for spans in calls {
                    let request = ExportTraceServiceRequest {
                        resource_spans: group_spans_by_resource_and_scope(spans, resource),
                    };
                    serde_json::to_writer(&mut text, &request).map_err(|e| e.to_string())?;
                    text.push(b'\n');
                }
                match out {
                    JsonOut::Stderr => {
                        let mut err = io::stderr().lock();
                        err.write_all(&text).and_then(|()| err.flush())
                    }
                    JsonOut::File(file) => file.append(&text),
                }
                .map_err(|e| e.to_string())
            }
        }
    }

    fn shutdown(&mut self) {
        match self {
            Sink::Otlp(exporter) => {
                let _ = exporter.shutdown();
            }
            Sink::Json {
                out: JsonOut::File(file),
                ..
            } => {
                let _ = file.writer.flush();
            }
            Sink::Json { .. } => {}
        }
    }
}

/// An append-only OTLP/JSON file, renamed to `<file>.old` once it reaches `MAX_FILE_BYTES`.
struct JsonFile {
    path: PathBuf,
    writer: BufWriter<File>,
    size: u64,
}

impl JsonFile {
    fn open(path: PathBuf) -> io::Result<JsonFile> {
        // Owner-only when created: spans carry the calls' attributes.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(JsonFile {
            path,
            writer: BufWriter::new(file),
            size,
        })
    }

    fn append(&mut self, text: &[u8]) -> io::Result<()> {
        self.writer.write_all(text)?;
        self.writer.flush()?;
        self.size += text.len() as u64;
        if self.size >= MAX_FILE_BYTES {
            fs::rename(&self.path, old_path(&self.path))?;
            *self = JsonFile::open(self.path.clone())?;
        }
        Ok(())
    }
}

fn old_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}
