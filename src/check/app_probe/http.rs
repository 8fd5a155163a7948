//! The app probe's HTTP side: the client (fresh connection per request, no proxy, no
//! redirects), one bounded exchange (timeout from the first byte sent to the last read, body
//! capped at `max_body_bytes`), and the classification of what went wrong into a
//! [`ProbeFailure`]. No judgement here: an [`Exchange`] is handed to [`super::judge`].

use super::judge::{Exchange, ProbeFailure};
use crate::config::ProbeConfig;

/// The probe's HTTP client: a fresh connection per request, no proxy, no redirects, the
/// probe's timeouts and roots; an error names what could not be loaded.
pub(super) fn client(cfg: &ProbeConfig) -> Result<reqwest::Client, String> {
    // reqwest with `rustls-no-provider` needs a process default; main installs ring, this
    // covers library users and tests. A second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .connect_timeout(cfg.timeout / 2)
        .timeout(cfg.timeout)
        .user_agent(concat!("rose-agent/", env!("CARGO_PKG_VERSION")));
    let mut client_err = None;
    // A plain-HTTP origin never uses TLS roots: loading the system store costs ~2 MB RSS.
    if cfg.origin.starts_with("http://") && cfg.ca_file.is_none() {
        b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
    }
    if let Some(f) = &cfg.ca_file {
        match crate::files::read(f)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(c) => b = b.tls_certs_merge([c]),
            Err(e) => client_err = Some(format!("ca_file {}: {e}", f.display())),
        }
    }
    match client_err {
        Some(e) => Err(e),
        None => b
            .build()
            .map_err(|e| crate::error::full_chain(&e.without_url())),
    }
}

/// One request to one path, bounded by the timeout from the first byte sent to the last
/// byte read, and by `max_body_bytes`.
pub(super) async fn exchange(cfg: &ProbeConfig, client: &reqwest::Client, path: &str) -> Exchange {
    let method = reqwest::Method::from_bytes(cfg.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = client.request(method, cfg.url(path));
    for h in &cfg.headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    if let Some(f) = &cfg.bearer_token_file {
        let token = match crate::files::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() && t.len() < 16 * 1024 => t,
            Ok(_) => {
                return failed(
                    ProbeFailure::Token,
                    format!("bearer token file {} is empty or too long", f.display()),
                );
            }
            Err(e) => {
                return failed(
                    ProbeFailure::Token,
                    format!("cannot read bearer token file {}: {e}", f.display()),
                );
            }
        };
        match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, v);
            }
            Err(_) => {
                return failed(
                    ProbeFailure::Token,
                    format!(
                        "bearer token in {} is not a valid header value",
                        f.display()
                    ),
                );
            }
        }
    }
    if let Some(ct) = &cfg.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct.as_str());
    }
    if let Some(body) = &cfg.body {
        req = req.body(body.clone());
    }
    let max = cfg.max_body_bytes;
    let run = async {
        let mut resp = req.send().await.map_err(|e| {
            let kind = classify(&e);
            failed(kind, crate::error::full_chain(&e.without_url()))
        })?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(failed_body(
                status,
                ProbeFailure::BodyTooLarge,
                format!("HTTP {status} with a body over {max} bytes"),
            ));
        }
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > max {
                        return Err(failed_body(
                            status,
                            ProbeFailure::BodyTooLarge,
                            format!("HTTP {status} with a body over {max} bytes"),
                        ));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    let kind = classify(&e);
                    return Err(failed_body(
                        status,
                        kind,
                        format!(
                            "HTTP {status}, body: {}",
                            crate::error::full_chain(&e.without_url())
                        ),
                    ));
                }
            }
        }
        Ok(Exchange::Answer { status, body })
    };
    match tokio::time::timeout(cfg.timeout, run).await {
        Ok(Ok(x)) | Ok(Err(x)) => x,
        Err(_) => failed(
            ProbeFailure::Timeout,
            format!("no complete answer within {} ms", cfg.timeout.as_millis()),
        ),
    }
}

/// Classifies a reqwest error by its type and the I/O error kinds in its chain.
fn classify(e: &reqwest::Error) -> ProbeFailure {
    use std::error::Error as _;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return ProbeFailure::Tls;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
            {
                return ProbeFailure::Tls;
            }
            match io.kind() {
                K::ConnectionRefused => return ProbeFailure::Refused,
                K::TimedOut => return ProbeFailure::ConnectTimeout,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return ProbeFailure::Closed;
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    if e.is_timeout() {
        if e.is_connect() {
            ProbeFailure::ConnectTimeout
        } else {
            ProbeFailure::Timeout
        }
    } else if e.is_connect() {
        let text = crate::error::full_chain(e).to_ascii_lowercase();
        // Fallbacks by text, for errors whose types are private to the HTTP stack.
        if text.contains("dns") || text.contains("lookup") || text.contains("resolve") {
            ProbeFailure::Dns
        } else if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|w| text.contains(w))
        {
            ProbeFailure::Tls
        } else {
            ProbeFailure::Other
        }
    } else if e.is_body() || e.is_decode() || e.is_request() {
        ProbeFailure::Closed
    } else {
        ProbeFailure::Other
    }
}

pub(super) fn failed(failure: ProbeFailure, error: String) -> Exchange {
    Exchange::Failed {
        failure,
        error,
        status: None,
    }
}

fn failed_body(status: u16, failure: ProbeFailure, error: String) -> Exchange {
    Exchange::Failed {
        failure,
        error,
        status: Some(status),
    }
}
