//! OTLP export against a real in-process receiver speaking both transports (gRPC via tonic, and
//! HTTP/protobuf via axum), decoding the opentelemetry-proto messages: check spans carry the
//! expected semantic-convention attributes, snapshot metrics arrive under their OTel names, no
//! password appears anywhere, and a receiver that goes away never stalls the agent.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumValue;
use prost::Message;
use support::*;

type Attrs = Vec<(String, String)>;

/// What the receiver got, flattened.
#[derive(Default)]
struct Received {
    /// (span name, attributes)
    spans: Vec<(String, Attrs)>,
    /// (metric name, value, attributes)
    points: Vec<(String, f64, Attrs)>,
    /// Everything, as debug text, to grep for secrets.
    raw: String,
    requests: u64,
}

type Shared = Arc<Mutex<Received>>;

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn record_traces(shared: &Shared, req: &ExportTraceServiceRequest) {
    let mut r = shared.lock().unwrap();
    r.requests += 1;
    r.raw.push_str(&format!("{req:?}"));
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                r.spans.push((s.name.clone(), attrs(&s.attributes)));
            }
        }
    }
}

fn record_metrics(shared: &Shared, req: &ExportMetricsServiceRequest) {
    let mut r = shared.lock().unwrap();
    r.requests += 1;
    r.raw.push_str(&format!("{req:?}"));
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let points = match &m.data {
                    Some(Data::Gauge(g)) => &g.data_points,
                    Some(Data::Sum(s)) => &s.data_points,
                    _ => continue,
                };
                for p in points {
                    let v = match p.value {
                        Some(NumValue::AsDouble(d)) => d,
                        Some(NumValue::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    };
                    r.points.push((m.name.clone(), v, attrs(&p.attributes)));
                }
            }
        }
    }
}

struct Grpc(Shared);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record_traces(&self.0, req.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        record_metrics(&self.0, req.get_ref());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Grpc,
    Http,
}

/// A receiver on its own thread and runtime; stops when dropped.
struct Receiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(transport: Transport, port: u16, shared: Shared) -> Receiver {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = shared;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let listener = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                let _ = ready_tx.send(());
                let stop = async move {
                    let _ = rx.await;
                };
                match transport {
                    Transport::Grpc => {
                        let incoming = tokio_stream_listener(listener);
                        let _ = tonic::transport::Server::builder()
                            .add_service(TraceServiceServer::new(Grpc(s.clone())))
                            .add_service(MetricsServiceServer::new(Grpc(s)))
                            .serve_with_incoming_shutdown(incoming, stop)
                            .await;
                    }
                    Transport::Http => {
                        let (st, sm) = (s.clone(), s);
                        let app = axum::Router::new()
                            .route(
                                "/v1/traces",
                                axum::routing::post(move |body: axum::body::Bytes| async move {
                                    if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                                        record_traces(&st, &req);
                                    }
                                    (
                                        [("content-type", "application/x-protobuf")],
                                        ExportTraceServiceResponse::default().encode_to_vec(),
                                    )
                                }),
                            )
                            .route(
                                "/v1/metrics",
                                axum::routing::post(move |body: axum::body::Bytes| async move {
                                    if let Ok(req) = ExportMetricsServiceRequest::decode(body) {
                                        record_metrics(&sm, &req);
                                    }
                                    (
                                        [("content-type", "application/x-protobuf")],
                                        ExportMetricsServiceResponse::default().encode_to_vec(),
                                    )
                                }),
                            );
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await;
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("receiver bound");
        Receiver {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Turns a bound listener into the stream of connections tonic serves.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream_shim::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    tokio_stream_shim::TcpIncoming(listener)
}

mod tokio_stream_shim {
    //! A minimal `Stream` of accepted connections (tonic accepts any such stream).
    pub use futures_core::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct TcpIncoming(pub tokio::net::TcpListener);

    impl Stream for TcpIncoming {
        type Item = Result<tokio::net::TcpStream, std::io::Error>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.poll_accept(cx) {
                Poll::Ready(Ok((s, _))) => Poll::Ready(Some(Ok(s))),
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

fn agent_env(pg: &PgCluster, transport: Transport, port: u16) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_CONNECT_TIMEOUT", "300ms".into()),
        ("AGENT_STATEMENT_TIMEOUT", "300ms".into()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
        ("OTEL_SERVICE_NAME", "rose-agent-test".into()),
    ];
    if transport == Transport::Grpc {
        env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()));
    }
    env
}

fn exports_spans_and_metrics(transport: Transport) {
    let pg = PgCluster::start();
    let port = free_port();
    let shared: Shared = Default::default();
    let _rx = Receiver::start(transport, port, shared.clone());
    let agent = Agent::start(&agent_env(&pg, transport, port));
    let got = wait_for(Duration::from_secs(20), || {
        let r = shared.lock().unwrap();
        let span = r.spans.iter().any(|(n, a)| {
            n == "check pg_connectivity" && a.iter().any(|(k, v)| k == "outcome" && v == "ok")
        });
        let up = r
            .points
            .iter()
            .any(|(n, v, _)| n == "rose.pg.up" && *v == 1.0);
        span && up
    });
    let r = shared.lock().unwrap();
    assert!(
        got.is_some(),
        "spans {:?}\npoints {:?}\n{}",
        r.spans.iter().map(|s| &s.0).collect::<Vec<_>>(),
        r.points.len(),
        agent.output()
    );
    let (_, a) = r
        .spans
        .iter()
        .find(|(n, _)| n == "check pg_connectivity")
        .unwrap();
    let get = |k: &str| a.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("db.system"), Some("postgresql"), "{a:?}");
    assert_eq!(get("db.namespace"), Some("rose"));
    assert_eq!(get("server.address"), Some("127.0.0.1"));
    assert_eq!(get("server.port"), Some(pg.port.to_string().as_str()));
    assert_eq!(get("check"), Some("pg_connectivity"));
    // Labels become attributes; units follow UCUM.
    assert!(
        r.points.iter().any(|(n, _, a)| n == "rose.pg.connections"
            && a.iter().any(|(k, v)| k == "state" && v == "idle")),
        "{:?}",
        r.points
            .iter()
            .map(|p| &p.0)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(r.raw.contains("rose-agent-test"), "service.name missing");
    assert!(!r.raw.contains(MONITOR_PASSWORD), "password in OTLP data");
}

#[test]
fn grpc_receiver_gets_spans_and_metrics() {
    exports_spans_and_metrics(Transport::Grpc);
}

#[test]
fn http_protobuf_receiver_gets_spans_and_metrics() {
    exports_spans_and_metrics(Transport::Http);
}

#[test]
fn a_receiver_that_goes_away_never_stalls_the_agent() {
    let pg = PgCluster::start();
    let port = free_port();
    let shared: Shared = Default::default();
    let mut rx = Receiver::start(Transport::Http, port, shared.clone());
    let agent = Agent::start(&agent_env(&pg, Transport::Http, port));
    wait_for(Duration::from_secs(20), || {
        shared.lock().unwrap().requests >= 2
    })
    .expect("exports arrive");
    rx.stop();
    let runs = |m: &Metrics| {
        m.get(r#"rose_agent_check_runs_total{check="pg_connectivity"}"#)
            .unwrap_or(0.0)
    };
    let before = runs(&agent.metrics());
    let dropped = wait_for(Duration::from_secs(20), || {
        let t = Instant::now();
        let m = agent.metrics();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "scrape took {:?}",
            t.elapsed()
        );
        m.get(r#"rose_agent_otlp_dropped_total{signal="metrics"}"#)
            .is_some_and(|v| v > 0.0)
    });
    assert!(dropped.is_some(), "drops not counted: {}", agent.output());
    assert!(runs(&agent.metrics()) > before, "the check loop stalled");
    // Back again: exports resume.
    let seen = shared.lock().unwrap().requests;
    let _rx2 = Receiver::start(Transport::Http, port, shared.clone());
    wait_for(Duration::from_secs(20), || {
        shared.lock().unwrap().requests > seen + 1
    })
    .unwrap_or_else(|| panic!("export did not resume: {}", agent.output()));
    let out = agent.output();
    assert_eq!(
        out.matches("OTLP export failed").count(),
        1,
        "one warning per outage: {out}"
    );
}

#[test]
fn json_logs_carry_trace_and_span_ids() {
    let port = free_port();
    let agent = Agent::start(&[
        (
            "AGENT_DATABASE_URL",
            format!("postgresql://u:{MONITOR_PASSWORD}@127.0.0.1:{port}/db"),
        ),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_LOG_FORMAT", "json".into()),
    ]);
    let line = wait_for(Duration::from_secs(5), || {
        agent.output().contains("Check failed.")
    })
    .map(|_| {
        agent
            .output()
            .lines()
            .find(|l| l.contains("Check failed."))
            .unwrap_or_default()
            .to_owned()
    });
    let line = line.unwrap_or_else(|| panic!("{}", agent.output()));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let span = &v["span"];
    assert_eq!(span["trace_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(span["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert_eq!(span["error.type"], "refused");
    assert!(!agent.output().contains(MONITOR_PASSWORD));
}
