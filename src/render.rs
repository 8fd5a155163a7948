//! Renders a snapshot as Prometheus text exposition with the `prometheus` crate's encoder, or as
//! OpenMetrics and gzipped when the scraper asks (formats in [`crate::exposition`]).
//! Pure over a [`Reading`] (the snapshot and the channels beside it) and the time of the scrape;
//! the output is cached by snapshot generation, findings generation, self-series version and the
//! set of stale checks (every format, plain and gzipped), so a scrape between two check runs costs a lock, a pass over the
//! checks' ages and a clone of bytes. A check whose outcome is past its freshness bound exports
//! its "unknown" series instead of its last samples (`rose_pg_up 0`, never a stale 1).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use axum::body::Bytes;

use crate::exposition::{self, Format, GzipHead, Wire, encode_openmetrics};

use crate::catalog::{self, Kind, MetricDef, Sample, Value};
use crate::reading::Reading;

/// What a rendering depends on besides the clock (see [`Reading::cache_key`]).
pub(crate) use crate::reading::CacheKey;

/// The renderings of one [`CacheKey`], each made on the first scrape that asks for it.
#[derive(Default)]
struct Cached {
    text: Option<Bytes>,
    openmetrics: Option<Bytes>,
    gzip_text: Option<GzipHead>,
    gzip_openmetrics: Option<GzipHead>,
}

/// One scrape's answer: the body in the format asked for, gzipped when `gzip`.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub(crate) body: Bytes,
    pub(crate) format: Format,
    pub(crate) gzip: bool,
}

/// Caches the last renderings (every format, plain and gzipped) by [`CacheKey`].
#[derive(Default)]
pub struct Renderer {
    cache: Mutex<Option<(CacheKey, Cached)>>,
}

impl Renderer {
    /// The text exposition of `snap` as of now.
    pub fn render(&self, snap: &Reading) -> Bytes {
        self.render_at(snap, SystemTime::now())
    }

    /// The text exposition of `snap` as of `now`: the cached body for the same generation and
    /// stale set, followed by the snapshot's age (which changes every scrape).
    pub(crate) fn render_at(&self, snap: &Reading, now: SystemTime) -> Bytes {
        self.render_wire(
            snap,
            now,
            Wire {
                format: Format::Text,
                gzip: false,
            },
        )
        .body
    }

    /// The exposition of `snap` as of `now` on `wire`: the cached body (or its cached gzip
    /// head) for the same generation and stale set, then the per-scrape tail (the snapshot's
    /// age; `# EOF` in OpenMetrics). Served uncompressed if compression fails.
    pub(crate) fn render_wire(&self, snap: &Reading, now: SystemTime, wire: Wire) -> Rendered {
        let key = snap.cache_key(now);
        let mut tail = match snap.age(now) {
            None => Vec::new(),
            Some(age) => {
                let fam = [family(
                    &catalog::AGENT_SNAPSHOT_AGE,
                    vec![Sample::new(
                        &catalog::AGENT_SNAPSHOT_AGE,
                        &[],
                        age.as_secs_f64(),
                    )],
                )];
                match wire.format {
                    Format::Text => encode(&fam),
                    Format::OpenMetrics => encode_openmetrics(&fam, unit_of),
                }
            }
        };
        if wire.format == Format::OpenMetrics {
            tail.extend_from_slice(exposition::EOF);
        }
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match guard.take() {
            Some(entry) if entry.0 == key => entry,
            _ => (key, Cached::default()),
        };
        let cached = &mut guard.insert(entry).1;
        let body = match wire.format {
            Format::Text => cached
                .text
                .get_or_insert_with(|| Bytes::from(encode(&families(snap, now))))
                .clone(),
            Format::OpenMetrics => cached
                .openmetrics
                .get_or_insert_with(|| {
                    Bytes::from(encode_openmetrics(&families(snap, now), unit_of))
                })
                .clone(),
        };
        if wire.gzip {
            let head = match wire.format {
                Format::Text => &mut cached.gzip_text,
                Format::OpenMetrics => &mut cached.gzip_openmetrics,
            };
            if head.is_none() {
                *head = GzipHead::new(&body);
            }
            if let Some(gz) = head.as_ref().and_then(|h| h.finish(&tail)) {
                return Rendered {
                    body: Bytes::from(gz),
                    format: wire.format,
                    gzip: true,
                };
            }
        }
        drop(guard);
        let body = if tail.is_empty() {
            body
        } else {
            let mut out = Vec::with_capacity(body.len() + tail.len());
            out.extend_from_slice(&body);
            out.extend_from_slice(&tail);
            Bytes::from(out)
        };
        Rendered {
            body,
            format: wire.format,
            gzip: false,
        }
    }
}

/// The unit OpenMetrics may declare for a family (`# UNIT`): the catalog's base unit when it is
/// one (seconds, bytes).
fn unit_of(name: &str) -> Option<&'static str> {
    catalog::all()
        .find(|d| d.name == name)
        .map(|d| d.unit)
        .filter(|u| matches!(*u, "seconds" | "bytes"))
}

/// All samples of a snapshot as of `now`: each check's own (its "unknown" series when its
/// outcome is stale) plus the agent's self-metrics.
pub fn all_samples(snap: &Reading, now: SystemTime) -> Vec<Sample> {
    let mut out = Vec::new();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    out.push(Sample::new(
        &catalog::AGENT_BUILD_INFO,
        &[
            env!("CARGO_PKG_VERSION"),
            env!("ROSE_AGENT_REVISION"),
            env!("ROSE_AGENT_RUSTC"),
            env!("ROSE_AGENT_TARGET"),
        ],
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
        snap.pg_connects.0 as f64,
    ));
    out.push(Sample::new(
        &catalog::AGENT_PG_CONNECTS,
        &["error"],
        snap.pg_connects.1 as f64,
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
    let mut silenced = std::collections::BTreeMap::<&str, u32>::new();
    for s in &snap.findings.silenced {
        *silenced.entry(s.finding.code).or_default() += 1;
    }
    for (code, n) in silenced {
        out.push(Sample::new(&catalog::FINDING_SILENCED, &[code], n as f64));
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
    for samples in &snap.components {
        out.extend(samples.iter().cloned());
    }
    for (id, st) in &snap.checks {
        let stale = st.is_stale(now);
        out.push(Sample::new(
            &catalog::AGENT_CHECK_SUCCESS,
            &[id],
            if st.last.result.is_ok() && !stale {
                1.0
            } else {
                0.0
            },
        ));
        out.push(Sample::new(
            &catalog::AGENT_CHECK_STALE,
            &[id],
            if stale { 1.0 } else { 0.0 },
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
        if stale {
            out.extend(st.freshness.unknown.iter().cloned());
        } else {
            out.extend(st.samples.iter().cloned());
        }
    }
    out
}

/// Groups samples into metric families in catalog order.
pub(crate) fn families(snap: &Reading, now: SystemTime) -> Vec<MetricFamily> {
    let mut grouped: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    for s in all_samples(snap, now) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::check::{Observation, process};
    use crate::snapshot::{Freshness, Outcome, Store};

    #[test]
    fn a_stale_check_serves_its_unknown_series_and_the_age_is_current() {
        let store = Store::new(vec!["pg_connectivity".into()]);
        let at = SystemTime::now();
        store.publish_fresh(
            "pg_connectivity",
            Outcome {
                at,
                duration: Duration::from_millis(2),
                result: Ok(Observation::Process(process::ProcessStats {
                    rss_bytes: 1,
                    cpu_seconds: 0.0,
                    open_fds: None,
                    max_fds: None,
                    start_time_seconds: None,
                })),
            },
            vec![Sample::new(&catalog::PG_UP, &[], 1.0)],
            Freshness {
                max_age: Some(Duration::from_secs(10)),
                unknown: vec![Sample::new(&catalog::PG_UP, &[], 0.0)],
            },
        );
        let snap = Reading::of(store.current());
        let r = Renderer::default();
        let text = |now| String::from_utf8(r.render_at(&snap, now).to_vec()).unwrap();
        let fresh = text(at + Duration::from_secs(5));
        assert!(fresh.contains("\nrose_pg_up 1\n"), "{fresh}");
        assert!(
            fresh.contains("rose_agent_snapshot_age_seconds 4.998"),
            "{fresh}"
        );
        let stale = text(at + Duration::from_secs(11));
        assert!(stale.contains("\nrose_pg_up 0\n"), "{stale}");
        assert!(
            stale.contains("rose_agent_check_stale{check=\"pg_connectivity\"} 1"),
            "{stale}"
        );
        assert!(
            stale.contains("rose_agent_check_success{check=\"pg_connectivity\"} 0"),
            "{stale}"
        );
        assert!(
            stale.contains("rose_agent_snapshot_age_seconds 10.998"),
            "{stale}"
        );
    }

    #[test]
    fn findings_and_self_series_published_beside_the_snapshot_are_rendered_at_once() {
        use crate::findings::state::{ActiveFinding, View};
        let sources = crate::reading::Sources::new(Store::new(vec![]));
        let r = Renderer::default();
        let now = SystemTime::now();
        let text = || String::from_utf8(r.render_at(&sources.read(), now).to_vec()).unwrap();
        let before = text();
        assert!(!before.contains("rose_finding_active{"), "{before}");
        assert!(
            before.contains("rose_agent_pg_connection_attempts_total{result=\"ok\"} 0"),
            "{before}"
        );
        // Same snapshot generation: the findings generation alone must miss the cache.
        sources.findings.publish(View {
            active: vec![ActiveFinding {
                finding: crate::findings::Finding::new(
                    crate::findings::Code::MissingIndex,
                    "s",
                    "e",
                    vec![],
                ),
                since: now,
            }],
            ..View::default()
        });
        let after = text();
        assert!(
            after.contains("rose_finding_active{code=\"missing_index\",severity=\"warning\"} 1"),
            "{after}"
        );
        sources
            .leader
            .set(vec![Sample::new(&catalog::AGENT_LEADER, &[], 1.0)]);
        sources.connects.record(true);
        let again = text();
        assert!(again.contains("\nrose_agent_leader 1\n"), "{again}");
        assert!(
            again.contains("rose_agent_pg_connection_attempts_total{result=\"ok\"} 1"),
            "{again}"
        );
    }
}
