//! OpenTelemetry export settings, read from the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`), `OTEL_EXPORTER_OTLP_HEADERS`, their
//! signal-specific `..._TRACES_...` / `..._METRICS_...` overrides, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL` (ms), `OTEL_EXPORTER_OTLP_TIMEOUT`
//! (ms), and `OTEL_SDK_DISABLED`. Export is off when no endpoint is set.

use std::time::Duration;

use super::raw::{Env, Problem};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalConfig {
    /// For gRPC the collector address; for HTTP the full URL of the signal's path.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) headers: Vec<(String, String)>,
}

/// Validated OpenTelemetry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    pub(crate) traces: Option<SignalConfig>,
    pub(crate) metrics: Option<SignalConfig>,
    pub(crate) service_name: String,
    pub(crate) resource_attributes: Vec<(String, String)>,
    /// `None` means the agent's interval.
    pub(crate) metric_interval: Option<Duration>,
    pub(crate) timeout: Duration,
}

impl OtelConfig {
    /// Reads the variables; `None` when export is off. Problems name their variable.
    pub(crate) fn from_env(env: &dyn Env, problems: &mut Vec<Problem>) -> Option<OtelConfig> {
        if env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let mut p = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };
        let base_protocol = match env.get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            None => Protocol::HttpProtobuf,
            Some(v) => parse_protocol(&v).unwrap_or_else(|| {
                p(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!("'{v}' is not one of: grpc, http/protobuf"),
                );
                Protocol::HttpProtobuf
            }),
        };
        let base_headers = env
            .get("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| parse_headers(&h))
            .unwrap_or_default();
        let base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT");
        let mut signal = |name: &str, path: &str| -> Option<SignalConfig> {
            let upper = name.to_ascii_uppercase();
            let protocol = match env.get(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL")) {
                None => base_protocol,
                Some(v) => parse_protocol(&v).unwrap_or_else(|| {
                    p(
                        &format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"),
                        format!("'{v}' is not one of: grpc, http/protobuf"),
                    );
                    base_protocol
                }),
            };
            // A signal-specific endpoint is used as given; the generic one gets the signal's path
            // for HTTP (the OTLP exporter specification).
            let (key, endpoint) = match (
                env.get(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")),
                &base,
            ) {
                (Some(e), _) => (format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"), e),
                (None, Some(b)) if protocol == Protocol::HttpProtobuf => (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    format!("{}/{path}", b.trim_end_matches('/')),
                ),
                (None, Some(b)) => ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), b.clone()),
                (None, None) => return None,
            };
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                p(
                    &key,
                    format!(
                        "{} must start with http:// or https://",
                        crate::dsn::url_for_message(&endpoint)
                    ),
                );
                return None;
            }
            let mut headers = base_headers.clone();
            if let Some(h) = env.get(&format!("OTEL_EXPORTER_OTLP_{upper}_HEADERS")) {
                headers = parse_headers(&h);
            }
            Some(SignalConfig {
                endpoint,
                protocol,
                headers,
            })
        };
        let traces = signal("traces", "v1/traces");
        let metrics = signal("metrics", "v1/metrics");
        if traces.is_none() && metrics.is_none() {
            return None;
        }
        let ms = |key: &str, problems: &mut Vec<Problem>| -> Option<Duration> {
            let v = env.get(key)?;
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(Duration::from_millis(n)),
                _ => {
                    problems.push(Problem {
                        key: key.into(),
                        message: format!("'{v}' is not a positive number of milliseconds"),
                    });
                    None
                }
            }
        };
        let metric_interval = ms("OTEL_METRIC_EXPORT_INTERVAL", problems);
        let timeout = ms("OTEL_EXPORTER_OTLP_TIMEOUT", problems).unwrap_or(Duration::from_secs(5));
        Some(OtelConfig {
            traces,
            metrics,
            service_name: env
                .get("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| "rose-agent".into()),
            resource_attributes: env
                .get("OTEL_RESOURCE_ATTRIBUTES")
                .map(|a| parse_headers(&a))
                .unwrap_or_default(),
            metric_interval,
            timeout,
        })
    }
}

fn parse_protocol(v: &str) -> Option<Protocol> {
    match v.trim() {
        "grpc" => Some(Protocol::Grpc),
        "http/protobuf" | "http" => Some(Protocol::HttpProtobuf),
        _ => None,
    }
}

/// `k1=v1,k2=v2` with percent-decoded values (the W3C baggage-like format the spec uses).
pub fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8_lossy()
                .into_owned();
            Some((k.trim().to_owned(), v)).filter(|(k, _)| !k.is_empty())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> (Option<OtelConfig>, Vec<Problem>) {
        let env: HashMap<&str, &str> = vars.iter().copied().collect();
        let mut problems = vec![];
        (OtelConfig::from_env(&env, &mut problems), problems)
    }

    #[test]
    fn off_without_endpoint() {
        assert_eq!(load(&[]).0, None);
        assert_eq!(
            load(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .0,
            None
        );
    }

    #[test]
    fn http_appends_signal_paths_and_grpc_does_not() {
        let (c, _) = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        let c = c.unwrap();
        assert_eq!(c.traces.unwrap().endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.metrics.unwrap().endpoint, "http://c:4318/v1/metrics");
        let (c, _) = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(c.unwrap().traces.unwrap().endpoint, "http://c:4317");
    }

    #[test]
    fn signal_overrides_and_headers() {
        let (c, _) = load(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc,x-team=rose",
            ),
            ("OTEL_SERVICE_NAME", "rose-agent-eu"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ]);
        let c = c.unwrap();
        let t = c.traces.unwrap();
        assert_eq!(t.endpoint, "http://t:4318/custom");
        assert_eq!(t.headers[0], ("authorization".into(), "Bearer abc".into()));
        assert!(c.metrics.is_none());
        assert_eq!(c.service_name, "rose-agent-eu");
        assert_eq!(
            c.resource_attributes,
            vec![("deployment.environment".into(), "prod".into())]
        );
    }

    #[test]
    fn bad_values_are_problems() {
        let (_, problems) = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
        ]);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"OTEL_EXPORTER_OTLP_PROTOCOL"), "{keys:?}");
        assert!(keys.contains(&"OTEL_EXPORTER_OTLP_ENDPOINT"), "{keys:?}");
    }
}
