//! OTel naming: the OTLP instrument name and UCUM unit of every catalog [`MetricDef`], and the
//! [`CheckTarget`] a check's span attributes describe (vocabulary, so the catalog,
//! docs/metrics.md, drivers, checks and the OTLP exporter share it).

use super::MetricDef;

/// `rose_pg_roundtrip_seconds` -> `rose.pg.roundtrip`: namespace dots after `rose` and the
/// subsystem, no unit suffix (the unit is metadata), no `_total` (the type says it). When two
/// metrics would share a name that way (`replica_lag` in seconds and in bytes) both keep their
/// unit suffix.
pub(crate) fn otel_name(def: &MetricDef) -> String {
    let stem = |d: &MetricDef| -> String {
        let mut n = d.name.strip_suffix("_total").unwrap_or(d.name);
        for suffix in ["_seconds", "_bytes"] {
            if let Some(stripped) = n.strip_suffix(suffix) {
                n = stripped;
            }
        }
        n.to_owned()
    };
    let mine = stem(def);
    let clash = super::all().any(|d| d.name != def.name && stem(d) == mine);
    let base = if clash {
        def.name
            .strip_suffix("_total")
            .unwrap_or(def.name)
            .to_owned()
    } else {
        mine
    };
    let mut parts = base.splitn(3, '_');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(rest)) => format!("{a}.{b}.{rest}"),
        _ => base.replace('_', "."),
    }
}

/// UCUM unit of a metric.
pub(crate) fn otel_unit(def: &MetricDef) -> &'static str {
    match def.unit {
        "seconds" => "s",
        "bytes" => "By",
        "bytes_per_second" => "By/s",
        _ => "1",
    }
}

/// What a check talks to, for span attributes (OpenTelemetry semantic conventions).
#[derive(Debug, Clone, PartialEq)]
pub enum CheckTarget {
    /// Nothing remote (the agent's own process, the host, a local file).
    Local,
    /// A PostgreSQL server: `db.system`, `db.namespace`, `server.address`, `server.port`.
    Postgres {
        namespace: String,
        address: String,
        port: u16,
    },
    /// An HTTP endpoint: `http.request.method`, `url.full`, `server.address`, `server.port`.
    Http {
        method: String,
        url: String,
        address: String,
        port: u16,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn names_map_to_otel_conventions() {
        assert_eq!(otel_name(&catalog::PG_ROUNDTRIP), "rose.pg.roundtrip");
        assert_eq!(otel_unit(&catalog::PG_ROUNDTRIP), "s");
        assert_eq!(otel_name(&catalog::PG_UP), "rose.pg.up");
        assert_eq!(
            otel_name(&catalog::AGENT_CHECK_RUNS),
            "rose.agent.check_runs"
        );
        assert_eq!(
            otel_name(&catalog::PG_DATABASE_SIZE),
            "rose.pg.database_size"
        );
        assert_eq!(otel_unit(&catalog::PG_DATABASE_SIZE), "By");
        let mut seen = std::collections::HashSet::new();
        for d in catalog::all() {
            assert!(
                seen.insert(otel_name(d)),
                "two metrics map to {}",
                otel_name(d)
            );
        }
    }
}
