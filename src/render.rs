//! Renders a snapshot as Prometheus text exposition with the `prometheus` crate's encoder.
//! Pure over the snapshot; the output is cached by snapshot generation, so a scrape between two
//! check runs costs a lock and a clone of bytes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use crate::catalog::{self, Kind, MetricDef, Sample, Value};
use crate::snapshot::Snapshot;

/// Caches the last rendering by snapshot generation.
#[derive(Default)]
pub struct Renderer {
    cache: Mutex<Option<(u64, axum::body::Bytes)>>,
}

impl Renderer {
    pub fn render(&self, snap: &Snapshot) -> axum::body::Bytes {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, body)) = cache.as_ref()
            && *generation == snap.generation
        {
            return body.clone();
        }
        let body = axum::body::Bytes::from(encode(&families(snap)));
        *cache = Some((snap.generation, body.clone()));
        body
    }
}

/// All samples of a snapshot: each check's own plus the agent's self-metrics.
pub fn all_samples(snap: &Snapshot) -> Vec<Sample> {
    let mut out = Vec::new();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    out.push(Sample::new(
        &catalog::AGENT_BUILD_INFO,
        &[env!("CARGO_PKG_VERSION")],
        1.0,
    ));
    out.push(Sample::new(
        &catalog::AGENT_START_TIME,
        &[],
        secs(snap.started),
    ));
    out.push(Sample::new(
        &catalog::AGENT_READY,
        &[],
        if snap.ready() { 1.0 } else { 0.0 },
    ));
    out.push(Sample::new(
        &catalog::AGENT_PG_CONNECTS,
        &["ok"],
        snap.pg_connects_ok as f64,
    ));
    out.push(Sample::new(
        &catalog::AGENT_PG_CONNECTS,
        &["error"],
        snap.pg_connects_failed as f64,
    ));
    let mut seen = std::collections::HashSet::new();
    for a in &snap.findings.active {
        let f = &a.finding;
        if seen.insert((f.code, f.severity)) {
            out.push(Sample::new(
                &catalog::FINDING_ACTIVE,
                &[f.code, f.severity.as_str()],
                1.0,
            ));
        }
    }
    for f in &snap.findings.pending {
        if seen.insert((f.code, f.severity)) {
            out.push(Sample::new(
                &catalog::FINDING_PENDING,
                &[f.code, f.severity.as_str()],
                1.0,
            ));
        }
    }
    out.push(Sample::new(
        &catalog::FINDING_TRANSITIONS,
        &["active"],
        snap.findings.activated_total as f64,
    ));
    out.push(Sample::new(
        &catalog::FINDING_TRANSITIONS,
        &["resolved"],
        snap.findings.resolved_total as f64,
    ));
    for samples in snap.components.values() {
        out.extend(samples.iter().cloned());
    }
    for (id, st) in &snap.checks {
        out.push(Sample::new(
            &catalog::AGENT_CHECK_SUCCESS,
            &[id],
            if st.last.result.is_ok() { 1.0 } else { 0.0 },
        ));
        out.push(Sample::new(
            &catalog::AGENT_CHECK_DURATION,
            &[id],
            st.last.duration.as_secs_f64(),
        ));
        out.push(Sample::new(
            &catalog::AGENT_CHECK_RUNS,
            &[id],
            st.runs as f64,
        ));
        if let Some(t) = st.last_success {
            out.push(Sample::new(
                &catalog::AGENT_CHECK_LAST_SUCCESS,
                &[id],
                secs(t),
            ));
        }
        for (kind, n) in &st.errors {
            out.push(Sample::new(
                &catalog::AGENT_CHECK_ERRORS,
                &[id, kind.as_str()],
                *n as f64,
            ));
        }
        out.extend(st.samples.iter().cloned());
    }
    out
}

/// Groups samples into metric families in catalog order.
pub fn families(snap: &Snapshot) -> Vec<MetricFamily> {
    let mut grouped: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    for s in all_samples(snap) {
        grouped.entry(s.def.name).or_default().push(s);
    }
    catalog::all()
        .filter_map(|def| grouped.remove(def.name).map(|samples| family(def, samples)))
        .collect()
}

fn family(def: &'static MetricDef, samples: Vec<Sample>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(def.name.to_owned());
    mf.set_help(def.help.to_owned());
    mf.set_field_type(match def.kind {
        Kind::Gauge => MetricType::GAUGE,
        Kind::Counter => MetricType::COUNTER,
        Kind::Histogram => MetricType::HISTOGRAM,
    });
    let mut seen = std::collections::HashSet::new();
    let metrics = samples
        .into_iter()
        .filter(|s| seen.insert(s.labels.clone()))
        .map(|s| {
            let labels = def
                .labels
                .iter()
                .zip(s.labels)
                .map(|(n, v)| {
                    let mut lp = LabelPair::default();
                    lp.set_name((*n).to_owned());
                    lp.set_value(v);
                    lp
                })
                .collect();
            let mut m = Metric::from_label(labels);
            match (def.kind, s.value) {
                (Kind::Counter, Value::Num(v)) => {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                }
                (_, Value::Num(v)) => {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
                (_, Value::Histogram(h)) => {
                    let mut hist = Histogram::default();
                    hist.set_sample_count(h.count);
                    hist.set_sample_sum(h.sum);
                    hist.set_bucket(
                        h.buckets
                            .into_iter()
                            .map(|(le, n)| {
                                let mut b = Bucket::default();
                                b.set_upper_bound(le);
                                b.set_cumulative_count(n);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(hist);
                }
            }
            m
        })
        .collect();
    mf.set_metric(metrics);
    mf
}

fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 * 1024);
    if let Err(e) = TextEncoder::new().encode(families, &mut buf) {
        tracing::error!(error = %e, "Cannot encode metrics.");
    }
    buf
}
