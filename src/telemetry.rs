//! Logs, traces and OTLP metrics.
//!
//! - Logs: structured `tracing` events to stderr (stdout stays clean for reports), text or JSON;
//!   the level comes from `RUST_LOG` (default `info`). JSON lines carry the current span's fields,
//!   including `trace_id` and `span_id` of check spans.
//! - Traces: one span per check run (see the scheduler) exported over OTLP when configured. A
//!   tracer provider always exists, so trace ids are real even without an exporter.
//! - Metrics over OTLP: every catalog metric becomes an observable instrument whose callback
//!   reads the snapshot, so OTLP and `/metrics` never disagree. Names follow OTel conventions
//!   (`catalog::otel`; the mapping is in docs/metrics.md).
//! - A collector that is down, slow or refusing never blocks anything: the SDK exports from its
//!   own threads with bounded queues and timeouts; failed exports are counted in
//!   `rose_agent_otlp_dropped_total{signal}` and warned about once per outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::catalog::otel::{otel_name, otel_unit};
use crate::catalog::{self, Kind, MetricDef, Sample, Value};
use crate::config::otel::{OtelConfig, Protocol, SignalConfig};
use crate::config::{Config, LogFormat};
use crate::reading::Sources;

/// Export counters shared with the SDK's export threads.
#[derive(Debug, Default)]
pub struct OtlpStats {
    spans_dropped: AtomicU64,
    metrics_dropped: AtomicU64,
    exports_ok: AtomicU64,
    down: AtomicBool,
}

impl OtlpStats {
    fn record(&self, signal: &'static str, items: usize, ok: bool) {
        if ok {
            self.exports_ok.fetch_add(1, Ordering::Relaxed);
            if self.down.swap(false, Ordering::Relaxed) {
                tracing::info!(signal, "OTLP export recovered.");
            }
            return;
        }
        let counter = if signal == "traces" {
            &self.spans_dropped
        } else {
            &self.metrics_dropped
        };
        counter.fetch_add(items as u64, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                signal,
                items,
                "OTLP export failed; dropping and counting until the collector is back."
            );
        }
    }

    /// The counters as samples (published into the snapshot by the caller).
    pub(crate) fn samples(&self) -> Vec<Sample> {
        vec![
            Sample::new(
                &catalog::AGENT_OTLP_DROPPED,
                &["traces"],
                self.spans_dropped.load(Ordering::Relaxed) as f64,
            ),
            Sample::new(
                &catalog::AGENT_OTLP_DROPPED,
                &["metrics"],
                self.metrics_dropped.load(Ordering::Relaxed) as f64,
            ),
            Sample::new(
                &catalog::AGENT_OTLP_EXPORTS,
                &[],
                self.exports_ok.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

/// The snapshot's samples of one generation, shared by the OTLP instrument callbacks.
type SampleCache = std::sync::Mutex<Option<(crate::render::CacheKey, Arc<Vec<Sample>>)>>;

/// Installed telemetry; shut it down to flush.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: Option<SdkMeterProvider>,
    otel: Option<OtelConfig>,
    pub(crate) stats: Arc<OtlpStats>,
}

/// Installs logging (and OTLP when configured). Call inside the Tokio runtime: the gRPC
/// exporter binds to it. A second call only returns a handle.
pub fn init(config: &Config) -> Telemetry {
    let stats = Arc::new(OtlpStats::default());
    let otel = config.otel.clone();
    let resource = resource(otel.as_ref(), &config.agent.instance);
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(sig) = otel.as_ref().and_then(|o| o.traces.clone()) {
        match span_exporter(
            &sig,
            otel.as_ref().map_or(Duration::from_secs(5), |o| o.timeout),
        ) {
            Ok(exp) => {
                let batch = BatchConfigBuilder::default()
                    .with_max_queue_size(2048)
                    .with_scheduled_delay(config.agent.interval.min(Duration::from_secs(5)))
                    .build();
                let exp = CountingSpans {
                    inner: exp,
                    stats: stats.clone(),
                };
                tracer_builder = tracer_builder.with_span_processor(
                    BatchSpanProcessor::builder(exp)
                        .with_batch_config(batch)
                        .build(),
                );
            }
            Err(e) => eprintln!("agent: OTLP traces off: {e}"),
        }
    }
    let tracer = tracer_builder.build();
    let meter = otel
        .as_ref()
        .and_then(|o| o.metrics.clone().map(|sig| (o, sig)))
        .and_then(|(o, sig)| match metric_exporter(&sig, o.timeout) {
            Ok(exp) => {
                let every = o
                    .metric_interval
                    .unwrap_or(config.agent.interval)
                    .max(Duration::from_millis(100));
                let reader = PeriodicReader::builder(CountingMetrics {
                    inner: exp,
                    stats: stats.clone(),
                })
                .with_interval(every)
                .build();
                Some(
                    SdkMeterProvider::builder()
                        .with_resource(resource.clone())
                        .with_reader(reader)
                        .build(),
                )
            }
            Err(e) => {
                eprintln!("agent: OTLP metrics off: {e}");
                None
            }
        });

    let (filter, bad_filter) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.agent.log_format {
        LogFormat::Text => fmt.event_format(MessageFirst).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Only the agent's own spans become OTel spans: exporter internals (h2, tonic, reqwest) never do.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("rose-agent"))
        .with_filter(Targets::new().with_target("rose_agent", LevelFilter::INFO));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_layer)
        .try_init();
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
    Telemetry {
        tracer,
        meter,
        otel,
        stats,
    }
}

/// Text log lines for people: time, level, the message first, then the event's own fields, then
/// which check the line is about (`check=` of the innermost span that has one). The span context
/// (trace ids, OTel attributes: ~300 characters) is left to JSON lines, which stay complete.
pub(crate) struct MessageFirst;

#[derive(Default)]
struct TextFields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for TextFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message = value.to_owned();
        } else if value.is_empty() || value.contains(char::is_whitespace) || value.contains('"') {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            // `%x` fields arrive here as Display wrapped in Debug: quote only what has spaces.
            let v = format!("{value:?}");
            if v.contains(char::is_whitespace) && !v.starts_with('"') {
                let _ = write!(self.rest, " {}={v:?}", field.name());
            } else {
                let _ = write!(self.rest, " {}={v}", field.name());
            }
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for MessageFirst
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut f = TextFields::default();
        event.record(&mut f);
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        write!(w, "{time} {:>5} {}{}", meta.level(), f.message, f.rest)?;
        // The check the line is about, from the span's recorded fields (`check="pg_x"`).
        let check = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let ext = span.extensions();
                let fields = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>()?;
                fields
                    .fields
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("check="))
                    .map(|c| c.trim_matches('"').to_owned())
            })
        });
        if let Some(c) = check {
            write!(w, " check={c}")?;
        }
        if !meta.target().starts_with("rose_agent") {
            write!(w, " target={}", meta.target())?;
        }
        writeln!(w)
    }
}

/// The log filter from `RUST_LOG`: `level` or `target=level` directives separated by commas
/// (`info`, `rose_agent=debug,warn`); default and fallback `info`. `Targets` rather than
/// `EnvFilter`: the same directive syntax without span/field filters, and without a regex engine
/// in the binary (about 200 KB of text that would sit in the agent's resident memory).
pub(crate) fn log_filter(spec: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => (info(), None),
        Some(s) => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (info(), Some(e.to_string())),
        },
    }
}

impl Telemetry {
    /// Exports the snapshot's metrics through observable instruments (no-op without OTLP metrics).
    pub(crate) fn export_snapshot(&self, sources: &Sources) {
        let Some(provider) = &self.meter else { return };
        let meter = provider.meter("rose-agent");
        // One sample list per snapshot generation, shared by every instrument's callback (a
        // collection calls ~100 callbacks; each would otherwise rebuild the whole list).
        let shared: Arc<SampleCache> = Arc::default();
        for def in catalog::all() {
            let (sources, shared) = (sources.clone(), shared.clone());
            let attrs = move |s: &Sample| -> Vec<KeyValue> {
                s.def
                    .labels
                    .iter()
                    .zip(&s.labels)
                    .map(|(k, v)| KeyValue::new(*k, v.clone()))
                    .collect()
            };
            let values =
                move |sources: &Sources, def: &'static MetricDef| -> Vec<(f64, Vec<KeyValue>)> {
                    let snap = sources.read();
                    let now = std::time::SystemTime::now();
                    if std::ptr::eq(def, &catalog::AGENT_SNAPSHOT_AGE) {
                        // Changes every collection: never cached.
                        return snap
                            .age(now)
                            .map(|age| (age.as_secs_f64(), Vec::new()))
                            .into_iter()
                            .collect();
                    }
                    let key = snap.cache_key(now);
                    let samples = {
                        let mut cache = shared.lock().unwrap_or_else(|p| p.into_inner());
                        match cache.as_ref() {
                            Some((k, s)) if *k == key => s.clone(),
                            _ => {
                                let s = Arc::new(crate::render::all_samples(&snap, now));
                                *cache = Some((key, s.clone()));
                                s
                            }
                        }
                    };
                    samples
                        .iter()
                        .filter(|s| std::ptr::eq(s.def, def))
                        .map(|s| match &s.value {
                            Value::Num(v) => (*v, attrs(s)),
                            Value::Histogram(h) => (h.sum, attrs(s)),
                        })
                        .collect()
                };
            match def.kind {
                Kind::Gauge => {
                    meter
                        .f64_observable_gauge(otel_name(def))
                        .with_unit(otel_unit(def))
                        .with_description(def.help)
                        .with_callback(move |o| {
                            for (v, a) in values(&sources, def) {
                                o.observe(v, &a);
                            }
                        })
                        .build();
                }
                // Histograms are exported as their running sum (a counter); bucket data stays
                // in /metrics.
                Kind::Counter | Kind::Histogram => {
                    meter
                        .f64_observable_counter(otel_name(def))
                        .with_unit(otel_unit(def))
                        .with_description(def.help)
                        .with_callback(move |o| {
                            for (v, a) in values(&sources, def) {
                                o.observe(v, &a);
                            }
                        })
                        .build();
                }
            }
        }
    }

    /// Whether anything is exported over OTLP.
    pub(crate) fn exporting(&self) -> bool {
        self.otel.is_some()
    }

    /// Flushes and stops the exporters within `grace` (the SDK's shutdown blocks, so it runs on
    /// a blocking thread).
    pub async fn shutdown(self, grace: Duration) {
        let Telemetry { tracer, meter, .. } = self;
        let job = tokio::task::spawn_blocking(move || {
            let _ = tracer.shutdown_with_timeout(grace);
            if let Some(m) = meter {
                let _ = m.shutdown_with_timeout(grace);
            }
        });
        if tokio::time::timeout(grace + Duration::from_millis(200), job)
            .await
            .is_err()
        {
            eprintln!("agent: telemetry flush did not finish within the grace period");
        }
    }
}

fn resource(otel: Option<&OtelConfig>, instance: &str) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance.to_owned()),
    ];
    if let Some(o) = otel {
        attrs.extend(
            o.resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
    }
    Resource::builder_empty()
        .with_service_name(otel.map_or_else(|| "rose-agent".to_owned(), |o| o.service_name.clone()))
        .with_attributes(attrs)
        .build()
}

/// Builds an OTLP exporter of either signal over the configured transport (the two signals'
/// builders differ only in their type).
macro_rules! otlp_exporter {
    ($exporter:ty, $sig:expr, $timeout:expr) => {{
        let (sig, timeout): (&SignalConfig, Duration) = ($sig, $timeout);
        let built = match sig.protocol {
            Protocol::Grpc => <$exporter>::builder()
                .with_tonic()
                .with_endpoint(sig.endpoint.clone())
                .with_timeout(timeout)
                .with_metadata(metadata(&sig.headers))
                .build(),
            Protocol::HttpProtobuf => <$exporter>::builder()
                .with_http()
                .with_endpoint(sig.endpoint.clone())
                .with_timeout(timeout)
                .with_headers(sig.headers.iter().cloned().collect())
                .build(),
        };
        built.map_err(anyhow::Error::from)
    }};
}

fn span_exporter(
    sig: &SignalConfig,
    timeout: Duration,
) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    otlp_exporter!(opentelemetry_otlp::SpanExporter, sig, timeout)
}

fn metric_exporter(
    sig: &SignalConfig,
    timeout: Duration,
) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    otlp_exporter!(opentelemetry_otlp::MetricExporter, sig, timeout)
}

fn metadata(
    headers: &[(String, String)],
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            k.to_ascii_lowercase().parse::<HeaderName>(),
            HeaderValue::from_str(v),
        ) {
            map.insert(k, v);
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

// === impl CountingSpans / CountingMetrics ===

#[derive(Debug)]
struct CountingSpans<E> {
    inner: E,
    stats: Arc<OtlpStats>,
}

impl<E: SpanExporter> SpanExporter for CountingSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let r = self.inner.export(batch).await;
        self.stats.record("traces", n, r.is_ok());
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

struct CountingMetrics<E> {
    inner: E,
    stats: Arc<OtlpStats>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let n: usize = metrics.scope_metrics().map(|s| s.metrics().count()).sum();
        let r = self.inner.export(metrics).await;
        self.stats.record("metrics", n, r.is_ok());
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_put_the_message_first_and_name_the_check_without_the_span_context() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || w.clone())
                .event_format(MessageFirst),
        );
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(
                "check",
                otel.name = "check pg_activity",
                check = "pg_activity",
                server.address = "127.0.0.1"
            );
            let _e = span.enter();
            tracing::warn!(kind = "refused", error = %"connection refused (os error 111)", "Check failed.");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line = out.lines().next().unwrap();
        let (_time, rest) = line.split_once(' ').unwrap();
        assert_eq!(
            rest.trim_start(),
            "WARN Check failed. kind=refused error=\"connection refused (os error 111)\" check=pg_activity",
            "{line}"
        );
    }

    #[test]
    fn rust_log_sets_levels_per_target_and_a_bad_value_falls_back_to_info() {
        let (t, bad) = log_filter(None);
        assert!(bad.is_none());
        assert!(t.would_enable("rose_agent::scheduler", &Level::INFO));
        assert!(!t.would_enable("rose_agent::scheduler", &Level::DEBUG));

        let (t, bad) = log_filter(Some("warn,rose_agent=debug"));
        assert!(bad.is_none());
        assert!(t.would_enable("rose_agent::pg", &Level::DEBUG));
        assert!(!t.would_enable("hyper::proto", &Level::INFO));
        assert!(t.would_enable("hyper::proto", &Level::WARN));

        let (t, bad) = log_filter(Some("rose_agent=loud"));
        assert!(bad.is_some(), "an unknown level is reported");
        assert!(t.would_enable("rose_agent", &Level::INFO));
        assert!(!t.would_enable("rose_agent", &Level::DEBUG));
    }
}
