//! The HTTP handlers in-process: the agent's router (`server::router`) is called as a tower
//! service with `oneshot`, no socket and no subprocess, over a snapshot the test builds itself.
//! Covers what the handlers decide: `/metrics` content negotiation (text, OpenMetrics) and gzip,
//! `/healthz`, `/readyz` and `/findings` (status, finding codes, `?pretty`).

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rose_agent::exposition::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use rose_agent::findings::Finding;
use rose_agent::findings::state::Tracker;
use rose_agent::snapshot::Store;
use tower::ServiceExt as _;

/// A store whose findings evaluation made `code` active (one cycle confirms it).
fn store_with_finding(code: &'static str) -> Store {
    let store = Store::new(vec![]);
    let f = Finding::new(code, "summary", "evidence", vec!["a step".into()]);
    let (view, _) = Tracker::new(1, 1).update(vec![f], SystemTime::now());
    store.publish_findings(view);
    store
}

/// One request through the router; the status, headers and the whole body.
fn call(
    store: &Store,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        let resp = rose_agent::server::router(store.clone(), None, None)
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn metrics_negotiates_text_openmetrics_and_gzip() {
    let store = store_with_finding("connection_refused");
    let series = r#"rose_finding_active{code="connection_refused",severity="critical"} 1"#;

    // No Accept: the text format.
    let (status, h, body) = call(&store, "/metrics", &[]);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
    assert_eq!(h[header::VARY], "Accept, Accept-Encoding");
    assert!(h.get(header::CONTENT_ENCODING).is_none());
    let plain = text(&body);
    assert!(plain.contains(series), "{plain}");
    assert!(!plain.contains("# EOF"));

    // What Prometheus sends: OpenMetrics first.
    let prom =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (_, h, body) = call(&store, "/metrics", &[(header::ACCEPT, prom)]);
    assert_eq!(h[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    let om = text(&body);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains(series), "{om}");

    // Text preferred over OpenMetrics: text.
    let (_, h, _) = call(
        &store,
        "/metrics",
        &[(
            header::ACCEPT,
            "application/openmetrics-text;q=0.2,text/plain",
        )],
    );
    assert_eq!(h[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);

    // gzip: a gzip body that inflates to the exposition; `gzip;q=0` is a refusal.
    let (_, h, body) = call(&store, "/metrics", &[(header::ACCEPT_ENCODING, "gzip")]);
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    let mut inflated = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut inflated)
        .unwrap();
    assert!(inflated.contains(series), "{inflated}");
    let (_, h, body) = call(
        &store,
        "/metrics",
        &[(header::ACCEPT_ENCODING, "gzip;q=0, identity")],
    );
    assert!(h.get(header::CONTENT_ENCODING).is_none());
    assert!(text(&body).contains(series));
}

#[test]
fn healthz_always_and_readyz_once_every_expected_check_ran() {
    let store = Store::new(vec!["pg_connectivity"]);
    let (status, _, body) = call(&store, "/healthz", &[]);
    assert_eq!((status, text(&body).as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, body) = call(&store, "/readyz", &[]);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(&body).contains("pg_connectivity"), "{}", text(&body));
    let (status, _, _) = call(&Store::new(vec![]), "/readyz", &[]);
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&store, "/no-such-path", &[]);
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn findings_reports_the_snapshot_findings_and_status() {
    let (status, h, body) = call(&Store::new(vec![]), "/findings", &[]);
    assert_eq!(status, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "unknown", "nothing evaluated yet: {v}");
    assert_eq!(v["findings"], serde_json::json!([]));

    let store = store_with_finding("connection_refused");
    let (_, _, body) = call(&store, "/findings", &[]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(v["findings"][0]["code"], "connection_refused", "{v}");
    assert_eq!(v["findings"][0]["severity"], "critical", "{v}");
    assert!(v["findings"][0]["since_rfc3339"].is_string(), "{v}");
    assert!(!text(&body).contains("\n  "), "compact by default");

    let (_, _, pretty) = call(&store, "/findings?pretty", &[]);
    let p: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
    assert!(text(&pretty).contains("\n  "), "?pretty indents");
    assert_eq!(p["findings"], v["findings"]);
}
