//! The wire formats of `/metrics`: which one a scraper asked for (`Accept`, `Accept-Encoding`),
//! the OpenMetrics 1.0 encoder (the `prometheus` crate 0.14 writes only the text format 0.0.4
//! and protobuf), and gzip in two parts so the cached body is compressed once per snapshot.
//!
//! Gzip: the cached part is a raw deflate stream ended with a sync flush (byte-aligned, no final
//! block) plus the running CRC-32 and length; each scrape appends its small tail (the snapshot's
//! age, `# EOF`) as a stored final deflate block and the gzip trailer. The result is one ordinary
//! gzip member (RFC 1952), readable by every client, and a scrape compresses only its tail.

use std::fmt::Write as _;

use flate2::{Compress, Compression, FlushCompress};
use prometheus::proto::{MetricFamily, MetricType};

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4 (the fallback).
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What a scrape gets: a format and whether the body is gzipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wire {
    pub(crate) format: Format,
    pub(crate) gzip: bool,
}

/// Pure: the media ranges of an `Accept`/`Accept-Encoding` header value as (lower-case token
/// without parameters, q).
fn ranges(header: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    header.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let token = parts.next()?.trim().to_ascii_lowercase();
        if token.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map(|(_, v)| v.trim().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        Some((token, q))
    })
}

/// Pure: the wire a scraper asked for. OpenMetrics when `Accept` names
/// `application/openmetrics-text` with a weight at least that of the text format (what
/// Prometheus sends: OpenMetrics first, `text/plain;q=0.5`), else the text format; gzip when
/// `Accept-Encoding` names `gzip` with a non-zero weight.
pub(crate) fn negotiate(accept: Option<&str>, accept_encoding: Option<&str>) -> Wire {
    let mut om_q = 0.0f32;
    let mut text_q = 0.0f32;
    for (token, q) in ranges(accept.unwrap_or("")) {
        match token.as_str() {
            "application/openmetrics-text" => om_q = om_q.max(q),
            "text/plain" | "text/*" | "*/*" => text_q = text_q.max(q),
            _ => {}
        }
    }
    let gzip = ranges(accept_encoding.unwrap_or(""))
        .any(|(token, q)| (token == "gzip" || token == "x-gzip") && q > 0.0);
    Wire {
        format: if om_q > 0.0 && om_q >= text_q {
            Format::OpenMetrics
        } else {
            Format::Text
        },
        gzip,
    }
}

/// A float as both formats write it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest form, the
/// same digits as the `prometheus` crate's text encoder, so `le` labels match across formats).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&float(value));
    out.push('\n');
}

/// Pure: OpenMetrics 1.0 text of `families`, without the closing `# EOF` (the caller appends
/// it after the per-scrape tail). A counter's family is its name without `_total` and its
/// sample keeps `_total`; `# UNIT` is written when the family name ends with its unit
/// (`seconds`, `bytes`), as OpenMetrics requires.
pub(crate) fn encode_openmetrics(
    families: &[MetricFamily],
    unit_of: impl Fn(&str) -> Option<&'static str>,
) -> Vec<u8> {
    let mut out = String::with_capacity(16 * 1024);
    for mf in families {
        let full = mf.name();
        let (family, kind) = match mf.get_field_type() {
            MetricType::COUNTER => (full.strip_suffix("_total").unwrap_or(full), "counter"),
            MetricType::GAUGE => (full, "gauge"),
            MetricType::HISTOGRAM => (full, "histogram"),
            MetricType::SUMMARY => (full, "summary"),
            MetricType::UNTYPED => (full, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        if let Some(unit) = unit_of(full)
            && family.len() > unit.len()
            && family.ends_with(unit)
            && family[..family.len() - unit.len()].ends_with('_')
        {
            let _ = writeln!(out, "# UNIT {family} {unit}");
        }
        out.push_str("# HELP ");
        out.push_str(family);
        out.push(' ');
        escape(mf.help(), &mut out);
        out.push('\n');
        for m in mf.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|lp| (lp.name(), lp.value()))
                .collect();
            match mf.get_field_type() {
                MetricType::COUNTER => sample(
                    &mut out,
                    family,
                    "_total",
                    &labels,
                    m.get_counter().get_value(),
                ),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut inf_seen = false;
                    for b in h.get_bucket() {
                        let le = float(b.upper_bound());
                        inf_seen |= b.upper_bound() == f64::INFINITY;
                        let mut with_le = labels.clone();
                        with_le.push(("le", &le));
                        sample(
                            &mut out,
                            family,
                            "_bucket",
                            &with_le,
                            b.cumulative_count() as f64,
                        );
                    }
                    if !inf_seen {
                        let mut with_le = labels.clone();
                        with_le.push(("le", "+Inf"));
                        sample(
                            &mut out,
                            family,
                            "_bucket",
                            &with_le,
                            h.get_sample_count() as f64,
                        );
                    }
                    sample(&mut out, family, "_sum", &labels, h.get_sample_sum());
                    sample(
                        &mut out,
                        family,
                        "_count",
                        &labels,
                        h.get_sample_count() as f64,
                    );
                }
                _ => sample(&mut out, family, "", &labels, m.get_gauge().get_value()),
            }
        }
    }
    out.into_bytes()
}

/// The end of every OpenMetrics exposition.
pub(crate) const EOF: &[u8] = b"# EOF\n";

/// Deflate calls per stream at most: bounds the loop whatever the library answers.
const MAX_DEFLATE_ROUNDS: usize = 10_000;

/// Raw deflate of `data` ended with a sync flush (byte-aligned, no final block: more may
/// follow). `None` if the compressor fails (never expected; the caller then serves it
/// uncompressed).
fn deflate_open(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    for _ in 0..MAX_DEFLATE_ROUNDS {
        out.reserve(4096);
        let consumed = usize::try_from(c.total_in()).ok()?;
        c.compress_vec(data.get(consumed..)?, &mut out, FlushCompress::Sync)
            .ok()?;
        // A sync flush is complete once all input is in and output room was left over.
        if usize::try_from(c.total_in()).ok()? == data.len() && out.len() < out.capacity() {
            return Some(out);
        }
    }
    None
}

/// Pure: `data` as stored (uncompressed) deflate blocks, the last one final, starting at a byte
/// boundary (where a sync flush leaves the stream). RFC 1951 3.2.4.
fn stored_blocks(data: &[u8]) -> Vec<u8> {
    const MAX: usize = u16::MAX as usize;
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / MAX + 1));
    let mut chunks = data.chunks(MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE=00 (stored), padding to the byte
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// The gzip header: deflate, no flags, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A gzip member's cached head: the header and the body's deflate blocks (not final), with the
/// CRC-32 and length of the body for the trailer.
#[derive(Clone)]
pub(crate) struct GzipHead {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl GzipHead {
    /// Compresses `body` (once per snapshot); `None` if the compressor fails.
    pub(crate) fn new(body: &[u8]) -> Option<GzipHead> {
        let mut bytes = GZIP_HEADER.to_vec();
        bytes.extend_from_slice(&deflate_open(body)?);
        let mut crc = crc32fast::Hasher::new();
        crc.update(body);
        Some(GzipHead {
            bytes,
            crc,
            len: body.len() as u64,
        })
    }

    /// The whole gzip member of the body followed by `tail`. The tail (a few hundred bytes) goes
    /// in stored deflate blocks, the last one final: no compressor is set up per scrape.
    pub(crate) fn finish(&self, tail: &[u8]) -> Option<Vec<u8>> {
        let end = stored_blocks(tail);
        let mut crc = self.crc.clone();
        crc.update(tail);
        let len = self.len + tail.len() as u64;
        let mut out = Vec::with_capacity(self.bytes.len() + end.len() + 8);
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&end);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        out.extend_from_slice(&((len & 0xffff_ffff) as u32).to_le_bytes());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric};

    use super::*;

    const PROMETHEUS_2_42_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn negotiates_what_prometheus_and_plain_clients_send() {
        let om = Wire {
            format: Format::OpenMetrics,
            gzip: true,
        };
        assert_eq!(negotiate(Some(PROMETHEUS_2_42_ACCEPT), Some("gzip")), om);
        let text = Wire {
            format: Format::Text,
            gzip: false,
        };
        assert_eq!(negotiate(None, None), text);
        assert_eq!(negotiate(Some("*/*"), Some("identity")), text);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4"), None), text);
        assert_eq!(
            negotiate(
                Some("text/plain;q=1, application/openmetrics-text;q=0.5"),
                None
            )
            .format,
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text; q=0"), None).format,
            Format::Text
        );
        assert!(negotiate(None, Some("deflate, gzip;q=0.8")).gzip);
        assert!(!negotiate(None, Some("gzip;q=0")).gzip);
        assert!(!negotiate(None, Some("br")).gzip);
    }

    fn label(k: &str, v: &str) -> LabelPair {
        let mut lp = LabelPair::default();
        lp.set_name(k.to_owned());
        lp.set_value(v.to_owned());
        lp
    }

    #[test]
    fn openmetrics_strips_total_from_counter_families_and_closes_histograms() {
        let mut c = MetricFamily::default();
        c.set_name("rose_x_runs_total".into());
        c.set_help("Runs \"x\".".into());
        c.set_field_type(MetricType::COUNTER);
        let mut m = Metric::from_label(vec![label("check", "a\"b\\c\nd")]);
        let mut cv = Counter::default();
        cv.set_value(3.0);
        m.set_counter(cv);
        c.set_metric(vec![m]);

        let mut g = MetricFamily::default();
        g.set_name("rose_x_age_seconds".into());
        g.set_help("Age.".into());
        g.set_field_type(MetricType::GAUGE);
        let mut m = Metric::default();
        let mut gv = Gauge::default();
        gv.set_value(f64::INFINITY);
        m.set_gauge(gv);
        g.set_metric(vec![m]);

        let mut h = MetricFamily::default();
        h.set_name("rose_x_duration_seconds".into());
        h.set_help("D.".into());
        h.set_field_type(MetricType::HISTOGRAM);
        let mut m = Metric::default();
        let mut hv = Histogram::default();
        let mut b = Bucket::default();
        b.set_upper_bound(0.5);
        b.set_cumulative_count(1);
        hv.set_bucket(vec![b]);
        hv.set_sample_count(2);
        hv.set_sample_sum(1.5);
        m.set_histogram(hv);
        h.set_metric(vec![m]);

        let text = String::from_utf8(encode_openmetrics(&[c, g, h], |n| {
            n.contains("seconds").then_some("seconds")
        }))
        .unwrap();
        assert_eq!(
            text,
            "# TYPE rose_x_runs counter\n# HELP rose_x_runs Runs \\\"x\\\".\n\
             rose_x_runs_total{check=\"a\\\"b\\\\c\\nd\"} 3\n\
             # TYPE rose_x_age_seconds gauge\n# UNIT rose_x_age_seconds seconds\n# HELP rose_x_age_seconds Age.\n\
             rose_x_age_seconds +Inf\n\
             # TYPE rose_x_duration_seconds histogram\n# UNIT rose_x_duration_seconds seconds\n# HELP rose_x_duration_seconds D.\n\
             rose_x_duration_seconds_bucket{le=\"0.5\"} 1\nrose_x_duration_seconds_bucket{le=\"+Inf\"} 2\n\
             rose_x_duration_seconds_sum 1.5\nrose_x_duration_seconds_count 2\n"
        );
    }

    #[test]
    fn a_cached_gzip_head_and_a_fresh_tail_make_one_valid_member() {
        let body: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("rose_x{{i=\"{}\"}} {}\n", i % 97, i).into_bytes())
            .collect();
        let head = GzipHead::new(&body).unwrap();
        let big = vec![b'x'; 70_000];
        for tail in [
            &b""[..],
            b"rose_agent_snapshot_age_seconds 1.5\n# EOF\n",
            &big,
        ] {
            let gz = head.finish(tail).unwrap();
            assert!(
                gz.len() < body.len() / 4 + tail.len() + 64,
                "{} of {}",
                gz.len(),
                body.len()
            );
            let mut d = flate2::read::GzDecoder::new(&gz[..]);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            let mut want = body.clone();
            want.extend_from_slice(tail);
            assert!(out == want, "round trip differs");
        }
    }
}
