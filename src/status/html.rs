//! The status page at `/`: one server-rendered HTML document built from a [`Summary`] with
//! escaped string building (no template engine to build, nothing fetched from elsewhere, no
//! JavaScript: it reloads itself with a meta refresh). Semantic HTML (header, main, section,
//! article, ordered steps, tables with headers); every colour comes with its word, so the page
//! reads the same in greyscale and to a screen reader. One column on a phone, a grid of cards on
//! a wide screen.

use std::fmt::Write as _;

use super::{Level, Segment, Summary, human_duration, split_commands};

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline have no business on the page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A link target that is safe to put in `href`: http(s) URLs only, else `None`.
fn safe_href(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| escape(url))
}

fn badge(level: Level) -> &'static str {
    match level {
        Level::Ok => "✔ OK",
        Level::Warning => "▲ WARNING",
        Level::Critical => "✖ CRITICAL",
        Level::Unknown => "? UNKNOWN",
    }
}

fn short_badge(level: Level) -> &'static str {
    match level {
        Level::Ok => "✔ OK",
        Level::Warning => "▲ WARN",
        Level::Critical => "✖ CRIT",
        Level::Unknown => "? N/A",
    }
}

const STYLE: &str = r#"
:root{--ok:#1a7f37;--ok-bg:#dafbe1;--warn:#7d4e00;--warn-bg:#fff1c2;--crit:#b3141f;--crit-bg:#ffe4e1;--unk:#57606a;--unk-bg:#eaeef2;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;--code:#0d1117;--code-fg:#e6edf3}
*{box-sizing:border-box}
html{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
body{margin:0}
.wrap{max-width:1180px;margin:0 auto;padding:0 16px}
a{color:#0550ae}
code,pre{font-family:ui-monospace,SFMono-Regular,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.9em}
.banner{color:#fff;padding:18px 0 16px;border-bottom:4px solid rgba(0,0,0,.25)}
.banner.lvl-ok{background:var(--ok)}.banner.lvl-warning{background:#f2c744;color:#1f2328}.banner.lvl-critical{background:var(--crit)}.banner.lvl-unknown{background:var(--unk)}
.banner .status{margin:0;font-size:.95rem;letter-spacing:.04em;font-weight:700}
.banner .status .badge{display:inline-block;padding:3px 10px;border-radius:4px;background:rgba(255,255,255,.22);border:1px solid rgba(0,0,0,.15)}
.banner h1{margin:8px 0 12px;font-size:1.55rem;line-height:1.25;font-weight:650}
.meta{display:flex;flex-wrap:wrap;gap:6px 22px;margin:0;font-size:.9rem}
.meta div{display:flex;gap:6px;min-width:0}.meta dt{opacity:.85}.meta dd{margin:0;font-weight:600;overflow-wrap:anywhere}
main{padding-top:8px;padding-bottom:24px}
h2{font-size:1.2rem;margin:26px 0 10px;display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}
h2 .count{font-size:.9rem;font-weight:400;color:var(--muted)}
.none{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--ok);border-radius:6px;padding:12px 14px;margin:0}
.finding{background:var(--card);border:1px solid var(--line);border-left:8px solid var(--unk);border-radius:6px;padding:14px 16px;margin:0 0 14px}
.finding.lvl-critical{border-left-color:var(--crit)}.finding.lvl-warning{border-left-color:#d4a72c}.finding.lvl-ok{border-left-color:var(--ok)}
.finding>header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 10px}
.finding h3{flex-basis:100%;margin:4px 0 0;font-size:1.12rem;line-height:1.3}
.finding .code{color:var(--muted);font-size:.88rem}
.state{font-size:.85rem;color:var(--muted)}
.tag{display:inline-block;font-size:.75rem;font-weight:700;letter-spacing:.03em;padding:1px 7px;border-radius:3px;white-space:nowrap;border:1px solid transparent}
.lvl-ok>.tag,.tag.lvl-ok{color:var(--ok);background:var(--ok-bg);border-color:#aceebb}
.lvl-warning>.tag,.tag.lvl-warning{color:var(--warn);background:var(--warn-bg);border-color:#f5d77a}
.lvl-critical>.tag,.tag.lvl-critical{color:#fff;background:var(--crit)}
.lvl-unknown>.tag,.tag.lvl-unknown{color:var(--unk);background:var(--unk-bg);border-color:var(--line)}
.tag.lvl-info{color:#0550ae;background:#ddf4ff;border-color:#b6e3ff}.finding.lvl-info{border-left-color:#54aeff}
.tag.pending{color:var(--muted);background:transparent;border:1px dashed var(--muted)}
.evidence{margin:10px 0;padding:8px 10px;background:var(--bg);border-radius:4px;overflow-wrap:anywhere}
.finding h4{margin:12px 0 4px;font-size:.95rem}
ol.steps{margin:0;padding-left:1.6em}ol.steps li{margin:6px 0;overflow-wrap:anywhere}
pre{margin:6px 0;padding:8px 10px;background:var(--code);color:var(--code-fg);border-radius:5px;overflow-x:auto;white-space:pre-wrap;word-break:break-word}
pre code{user-select:all;font-size:.88rem}
:not(pre)>code{background:var(--unk-bg);padding:0 4px;border-radius:3px}
.runbook{margin:10px 0 0;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px 6px}
.card h3{margin:0 0 6px;font-size:1rem}
.card dl{margin:0}
.fig{display:grid;grid-template-columns:1fr auto;gap:0 10px;padding:8px 0;border-top:1px solid var(--line);align-items:center}
.fig:first-child{border-top:0}
.fig dt{color:var(--muted);font-size:.88rem;grid-column:1;grid-row:1}
.fig .tag{grid-column:2;grid-row:1/3;margin:0;align-self:center}
.fig .value{grid-column:1;grid-row:2;margin:0;font-size:1.08rem;font-weight:650;overflow-wrap:anywhere}
.fig .note{grid-column:1/-1;margin:2px 0 0;font-size:.82rem;color:var(--muted);overflow-wrap:anywhere}
.fig.lvl-critical .value{color:var(--crit)}.fig.lvl-warning .value{color:var(--warn)}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:6px}
table.checks{border-collapse:collapse;width:100%;font-size:.9rem}
table.checks th,table.checks td{padding:6px 10px;text-align:left;border-top:1px solid var(--line);vertical-align:top}
table.checks thead th{border-top:0;background:var(--bg);font-weight:600}
table.checks td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
table.checks td.err{color:var(--crit);overflow-wrap:anywhere;min-width:14em}
footer{color:var(--muted);font-size:.85rem;padding-bottom:28px}
footer ul{display:flex;flex-wrap:wrap;gap:4px 16px;padding:0;margin:6px 0;list-style:none}
@media (max-width:600px){.banner h1{font-size:1.25rem}.cards{grid-template-columns:1fr}table.checks .opt{display:none}}
"#;

/// Pure: the whole page.
pub(crate) fn render(s: &Summary) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let level = Level::of(&s.status);
    let target = s.agent.target.as_deref().unwrap_or("no PostgreSQL");
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta http-equiv=\"refresh\" content=\"{}\">\n<title>{} · rose-agent · {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        s.refresh_seconds,
        escape(&s.status.to_uppercase()),
        escape(target),
    );
    // The banner: status word, why, and who is speaking.
    let _ = write!(
        o,
        "<header class=\"banner lvl-{lvl}\" id=\"overall\" data-status=\"{lvl}\">\n<div class=\"wrap\">\n<p class=\"status\"><span class=\"badge\">{badge}</span>{pending}</p>\n<h1 id=\"headline\">{headline}</h1>\n<dl class=\"meta\">",
        lvl = level.as_str(),
        badge = badge(level),
        pending = if s.status_pending {
            " <span class=\"pending-note\">from pending findings (confirming, not alerted yet)</span>"
        } else {
            ""
        },
        headline = escape(&s.headline),
    );
    let a = &s.agent;
    let evaluated = match (&s.evaluated_at, s.evaluated_age_seconds) {
        (Some(t), Some(age)) => format!(
            "<time datetime=\"{}\">{} ago</time>",
            escape(t),
            escape(&human_duration(age))
        ),
        _ => "not yet".into(),
    };
    let meta: [(&str, String); 6] = [
        ("Target", escape(target)),
        ("App", escape(&a.app_url)),
        ("FEATURE_DATABASE_TYPE", escape(&a.database_type)),
        ("Last evaluation", evaluated),
        (
            "Agent",
            format!("{} on {}", escape(&a.version), escape(&a.instance)),
        ),
        (
            "Up",
            format!(
                "<span title=\"since {}\">{}</span>",
                escape(&a.started_at),
                escape(&human_duration(a.uptime_seconds))
            ),
        ),
    ];
    for (k, v) in meta {
        let _ = write!(o, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    }
    o.push_str("</dl>\n</div>\n</header>\n<main class=\"wrap\">\n");

    // Findings first.
    let active = s.findings.iter().filter(|f| f.state == "active").count();
    let pending = s.findings.len() - active;
    let _ = write!(
        o,
        "<section id=\"findings\" aria-labelledby=\"findings-title\">\n<h2 id=\"findings-title\">Findings <span class=\"count\">{active} active · {pending} pending</span></h2>\n"
    );
    if s.findings.is_empty() {
        let text = if s.evaluated_at.is_some() {
            "No active or pending findings."
        } else {
            "Findings are evaluated once every check has run."
        };
        let _ = writeln!(o, "<p class=\"none\">{text}</p>");
    }
    for (i, f) in s.findings.iter().enumerate() {
        let lvl = Level::of(&f.severity);
        // Findings carry a severity (info has no level of its own): class and word from it.
        let (class, word) = match f.severity.as_str() {
            "info" => ("info", "ℹ INFO"),
            _ => (lvl.as_str(), badge(lvl)),
        };
        let state = match (&f.since, f.since_seconds) {
            (Some(t), Some(age)) => format!(
                "<span class=\"state\">active for <time datetime=\"{}\">{}</time></span>",
                escape(t),
                escape(&human_duration(age))
            ),
            _ => "<span class=\"tag pending\">PENDING</span> <span class=\"state\">confirming, not alerted yet</span>".into(),
        };
        let subject = f
            .subject
            .as_deref()
            .map(|s| format!(" · {}", escape(s)))
            .unwrap_or_default();
        let _ = write!(
            o,
            "<article class=\"finding lvl-{class}\" id=\"finding-{i}\" data-code=\"{code}\" data-state=\"{st}\">\n<header><span class=\"tag lvl-{class}\">{word}</span> {state}\n<h3>{summary}</h3>\n<p class=\"code\"><code>{code}</code>{subject}</p></header>\n<p class=\"evidence\"><strong>Evidence:</strong> {evidence}</p>\n",
            code = escape(&f.code),
            st = escape(&f.state),
            summary = escape(&f.summary),
            evidence = escape(&f.evidence),
        );
        if !f.steps.is_empty() {
            o.push_str("<h4>What to do</h4>\n<ol class=\"steps\">\n");
            for step in &f.steps {
                o.push_str("<li>");
                for seg in split_commands(step) {
                    match seg {
                        Segment::Text(t) => o.push_str(&escape(t.trim())),
                        Segment::Command(c) if c.len() < 28 && !c.contains(';') => {
                            let _ = write!(o, " <code>{}</code> ", escape(c));
                        }
                        Segment::Command(c) => {
                            let _ = write!(o, "<pre><code>{}</code></pre>", escape(c));
                        }
                    }
                }
                o.push_str("</li>\n");
            }
            o.push_str("</ol>\n");
        }
        match safe_href(&f.runbook_url) {
            Some(href) => {
                let _ = writeln!(
                    o,
                    "<p class=\"runbook\"><a href=\"{href}\" rel=\"noreferrer\">Runbook: {} →</a></p>",
                    escape(&f.code)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "<p class=\"runbook\">Runbook: {}</p>",
                    escape(&f.runbook_url)
                );
            }
        }
        o.push_str("</article>\n");
    }
    if !s.silenced.is_empty() {
        let _ = writeln!(
            o,
            "<h3 id=\"silenced-title\">Silenced on purpose <span class=\"count\">{} · not counted in the status or alerts</span></h3>\n<ul id=\"silenced\">",
            s.silenced.len()
        );
        for f in &s.silenced {
            let subject = f
                .subject
                .as_deref()
                .map(|x| format!(" · {}", escape(x)))
                .unwrap_or_default();
            let until = f
                .until
                .as_deref()
                .map(|u| format!(" until <time>{}</time>", escape(u)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "<li class=\"silenced\" data-code=\"{code}\" data-state=\"silenced\"><span class=\"tag pending\">SILENCED</span> <code>{code}</code>{subject}: {summary} <span class=\"state\">({reason}{until})</span></li>",
                code = escape(&f.code),
                summary = escape(&f.summary),
                reason = escape(&f.reason),
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");

    // Figures at a glance.
    if !s.figures.is_empty() {
        o.push_str("<section id=\"figures\" aria-labelledby=\"figures-title\">\n<h2 id=\"figures-title\">At a glance</h2>\n<div class=\"cards\">\n");
        for (i, g) in s.figures.iter().enumerate() {
            let _ = write!(
                o,
                "<section class=\"card\" aria-labelledby=\"card-{i}\"><h3 id=\"card-{i}\">{}</h3>\n<dl>\n",
                escape(&g.title)
            );
            for it in &g.items {
                let note = if it.note.is_empty() {
                    String::new()
                } else {
                    format!("<dd class=\"note\">{}</dd>", escape(&it.note))
                };
                let _ = writeln!(
                    o,
                    "<div class=\"fig lvl-{lvl}\"><dt>{label}</dt><dd class=\"value\">{value}</dd><dd class=\"tag lvl-{lvl}\">{badge}</dd>{note}</div>",
                    lvl = it.level.as_str(),
                    label = escape(&it.label),
                    value = escape(&it.value),
                    badge = short_badge(it.level),
                );
            }
            o.push_str("</dl>\n</section>\n");
        }
        o.push_str("</div>\n</section>\n");
    }

    // Every check.
    o.push_str("<section id=\"checks\" aria-labelledby=\"checks-title\">\n<h2 id=\"checks-title\">Checks <span class=\"count\">last outcome of each</span></h2>\n<div class=\"scroll\"><table class=\"checks\">\n<thead><tr><th scope=\"col\">Check</th><th scope=\"col\">Outcome</th><th scope=\"col\" class=\"num\">Took</th><th scope=\"col\" class=\"num\">Age</th><th scope=\"col\" class=\"num opt\">Runs</th><th scope=\"col\">Error</th></tr></thead>\n<tbody>\n");
    for c in &s.checks {
        let fails = if c.consecutive_failures > 1 {
            format!(" ×{}", c.consecutive_failures)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "<tr class=\"lvl-{lvl}\" data-check=\"{id}\"><th scope=\"row\">{id}</th><td><span class=\"tag lvl-{lvl}\">{outcome}</span>{fails}</td><td class=\"num\">{took}</td><td class=\"num\">{age}</td><td class=\"num opt\">{runs}</td><td class=\"err\">{err}</td></tr>",
            lvl = c.level.as_str(),
            id = escape(&c.id),
            outcome = escape(&c.outcome),
            took = if c.runs == 0 {
                "–".into()
            } else {
                escape(&human_duration(c.duration_ms / 1000.0))
            },
            age = if c.runs == 0 {
                "–".into()
            } else {
                escape(&human_duration(c.age_seconds))
            },
            runs = c.runs,
            err = escape(c.error.as_deref().unwrap_or("")),
        );
    }
    o.push_str("</tbody></table></div>\n</section>\n</main>\n");
    let _ = write!(
        o,
        "<footer class=\"wrap\"><p>Generated <time datetime=\"{gen}\">{gen}</time>; this page reloads every {r} s and reads only the agent's last snapshot (never the database).</p>\n<ul><li><a href=\"/findings?pretty\">/findings</a> findings (JSON)</li><li><a href=\"/status\">/status</a> this summary (JSON)</li><li><a href=\"/metrics\">/metrics</a> Prometheus</li><li><a href=\"/healthz\">/healthz</a> liveness</li><li><a href=\"/readyz\">/readyz</a> readiness</li></ul></footer>\n</body>\n</html>\n",
        gen = escape(&s.generated_at),
        r = s.refresh_seconds,
    );
    o
}
