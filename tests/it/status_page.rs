//! The status page at `/` in a real browser: Debian's chromium (headless) loads it from the agent
//! binary watching a real PostgreSQL cluster and the stand-in app on loopback. Asserted on the
//! rendered DOM: a healthy start, then a degraded app, a dropped index and a stopped database
//! each appear with their steps within the detection bound; screenshots go to
//! `target/screenshots/` for people to look at (docs/status-*.png are copies of them).

use crate::support;

use std::time::Duration;

use support::browser::{Browser, screenshot_dir};
use support::*;

/// From a fault (the agent's interval is 1 s here, see `fast_env`) to its finding on the page: the check notices at its next run (at most one
/// interval), the findings loop shows it pending at its next evaluation (at most one more);
/// the rest is slack for a loaded two-core host. With the default 15 s interval this is well
/// within one interval.
const DETECTION: Duration = Duration::from_secs(4);

/// Polls the page (cheap HTTP GETs of the same document the browser gets) until `f` holds;
/// returns how long it took.
fn until(agent: &Agent, what: &str, limit: Duration, f: impl Fn(&str) -> bool) -> Duration {
    let mut last = String::new();
    wait_for(limit, || {
        last = agent.get("/").1;
        f(&last)
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: not on the page within {limit:?}\n{}\n{}",
            last.chars().take(6000).collect::<String>(),
            agent.output()
        )
    })
}

fn finding_article<'a>(dom: &'a str, code: &str) -> &'a str {
    let start = dom
        .find(&format!("data-code=\"{code}\""))
        .unwrap_or_else(|| panic!("no finding {code} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</article>").unwrap_or(rest.len())]
}

fn shoot(browser: &Browser, url: &str, name: &str) {
    let dir = screenshot_dir();
    browser.screenshot(url, &dir.join(format!("{name}.png")), 1200, 1500);
    browser.screenshot(url, &dir.join(format!("{name}-phone.png")), 390, 1500);
}

#[test]
fn the_status_page_shows_a_degraded_app_a_dropped_index_and_a_stopped_database() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let pg = PgCluster::start();
    let app = Standin::start(&[]);
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("APP_BASE_URL", app.base_url()),
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("AGENT_SLOW_INTERVAL", "1s".into()),
        ("AGENT_APP_PROBE_INTERVAL", "1s".into()),
        ("AGENT_APP_PROBE_TIMEOUT", "400ms".into()),
        (
            "AGENT_RUNBOOK_BASE_URL",
            "https://runbooks.example/rose".into(),
        ),
    ]);
    let agent = Agent::start(&env);
    let url = format!("http://127.0.0.1:{}/", agent.port);

    // Healthy: the first evaluation is in, nothing is wrong with the app or the schema.
    until(&agent, "first evaluation", Duration::from_secs(20), |p| {
        !p.contains("data-status=\"unknown\"") && p.contains("data-check=\"pg_schema\"")
    });
    let dom = browser.dom(&url);
    assert!(dom.contains("<h1 id=\"headline\">"), "{dom}");
    assert!(dom.contains("127.0.0.1:"), "the target: {dom}");
    assert!(!dom.contains(MONITOR_PASSWORD), "a password on the page");
    for absent in ["app_degraded", "missing_index", "connection_refused"] {
        assert!(
            !dom.contains(&format!("data-code=\"{absent}\"")),
            "{absent}: {dom}"
        );
    }
    for figure in [
        "Connections vs slots",
        "Pool budget",
        "Idle in transaction",
        "Database size",
        "Schema",
        "Checkpoint store",
        "health",
        "Memory available",
    ] {
        assert!(dom.contains(figure), "figure {figure} missing: {dom}");
    }
    // No script, nothing fetched from elsewhere.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("src=\"http"), "{dom}");
    // The page reads only the snapshot: it answers at once, like a scrape.
    let t = std::time::Instant::now();
    let (code, _) = agent.get("/");
    eprintln!("GET / answered {code} in {:?}", t.elapsed());
    assert!(code == 200 && t.elapsed() < Duration::from_millis(500));
    shoot(&browser, &url, "healthy");

    // A degraded app (one service down).
    app.set("mode=degraded&down=elevenlabs");
    let took = until(&agent, "app_degraded", DETECTION, |p| {
        p.contains("data-code=\"app_degraded\"")
    });
    eprintln!("app_degraded on the page after {took:?}");
    let dom = browser.dom(&url);
    let f = finding_article(&dom, "app_degraded");
    assert!(
        f.contains("<ol class=\"steps\">") && f.contains("<li>"),
        "{f}"
    );
    assert!(f.contains("elevenlabs"), "{f}");
    assert!(
        f.contains("href=\"https://runbooks.example/rose/app_degraded.md\""),
        "{f}"
    );
    // Once it is active (past the pending cycles), for the picture.
    until(
        &agent,
        "app_degraded active",
        Duration::from_secs(10),
        |p| p.contains("data-code=\"app_degraded\" data-state=\"active\""),
    );
    shoot(&browser, &url, "degraded-app");
    app.set("mode=healthy");

    // A dropped LangGraph index: the step is the CREATE INDEX to run, in a code block.
    pg.psql("DROP INDEX checkpoints_thread_id_idx");
    let took = until(&agent, "missing_index", DETECTION, |p| {
        p.contains("data-code=\"missing_index\"")
    });
    eprintln!("missing_index on the page after {took:?}");
    let dom = browser.dom(&url);
    let f = finding_article(&dom, "missing_index");
    assert!(
        f.contains("<pre><code>CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id);</code></pre>"),
        "{f}"
    );
    pg.psql("CREATE INDEX checkpoints_thread_id_idx ON checkpoints(thread_id)");

    // The database stops: critical, with what to do.
    pg.stop();
    let took = until(&agent, "connection_refused", DETECTION, |p| {
        p.contains("data-code=\"connection_refused\"")
    });
    eprintln!("connection_refused on the page after {took:?}");
    let dom = browser.dom(&url);
    assert!(dom.contains("data-status=\"critical\""), "{dom}");
    let f = finding_article(&dom, "connection_refused");
    assert!(
        f.contains("<ol class=\"steps\">") && f.contains("<li>"),
        "{f}"
    );
    assert!(dom.contains("CRITICAL"), "the status in words");
    assert!(!dom.contains(MONITOR_PASSWORD), "a password on the page");
    until(
        &agent,
        "connection_refused active",
        Duration::from_secs(10),
        |p| p.contains("data-code=\"connection_refused\" data-state=\"active\""),
    );
    shoot(&browser, &url, "database-down");
}
