//! The schemas the app's `DATABASE_URL` puts first in `search_path` (`options=-c
//! search_path=...` in a URL, `options='-c search_path=...'` in a key/value DSN): LangGraph's
//! savers create their tables unqualified, so they land in the first of these that exists. Pure
//! text handling; a DSN it cannot read gives no schemas (the agent then detects them).

use crate::dsn::Dsn;

/// The schema names of the app DSN's `search_path` option, in order, with `$user` replaced by
/// the DSN's user (dropped when the DSN names none). Empty when the option is absent.
pub(crate) fn app_search_path(dsn_text: &str) -> Vec<String> {
    let Some(options) = options_value(dsn_text.trim()) else {
        return Vec::new();
    };
    let Some(value) = search_path_in_options(&options) else {
        return Vec::new();
    };
    let user = Dsn::parse(dsn_text).ok().map(|d| d.user);
    split_schemas(&value)
        .into_iter()
        .filter_map(|s| {
            if s == "$user" {
                user.clone().filter(|u| !u.is_empty())
            } else {
                Some(s)
            }
        })
        .filter(|s| !s.is_empty() && s.len() <= super::checks::MAX_IDENTIFIER_BYTES)
        .collect()
}

/// The raw `options` value of a URL (percent-decoded) or key/value DSN.
fn options_value(dsn: &str) -> Option<String> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let query = dsn.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or(query);
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (percent_decode(k) == "options").then(|| percent_decode(v))
        })
    } else {
        keyword_value(dsn, "options")
    }
}

/// `key = value` or `key = 'quoted \' value'` in a libpq key/value string.
fn keyword_value(dsn: &str, key: &str) -> Option<String> {
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        chars.peek()?;
        let mut k = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            k.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut v = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '\'' => break,
                    c => v.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    v.extend(chars.next());
                } else {
                    v.push(c);
                }
            }
        }
        if k == key {
            return Some(v);
        }
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                match (
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `search_path` in libpq `options` (`-c search_path=a,b`, `-csearch_path=a`,
/// `--search_path=a`, `--search-path=a`); `\ ` escapes a space. The last setting wins, as in
/// the server.
fn search_path_in_options(options: &str) -> Option<String> {
    // Split into words on unescaped whitespace, resolving `\x` escapes.
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting = if w == "-c" {
            i += 1;
            words.get(i).cloned()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("--").map(str::to_owned)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('='))
            && name
                .trim()
                .replace('-', "_")
                .eq_ignore_ascii_case("search_path")
        {
            found = Some(value.to_owned());
        }
        i += 1;
    }
    found
}

/// `a, "My Schema", B` -> `a`, `My Schema`, `b` (unquoted names fold to lower case).
fn split_schemas(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = value.chars().peekable();
    let finish = |cur: &mut String, was_quoted: &mut bool, out: &mut Vec<String>| {
        let s = if *was_quoted {
            std::mem::take(cur)
        } else {
            std::mem::take(cur).trim().to_lowercase()
        };
        *was_quoted = false;
        out.push(s);
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => finish(&mut cur, &mut was_quoted, &mut out),
            c if !quoted && c.is_whitespace() => {}
            c => cur.push(c),
        }
    }
    finish(&mut cur, &mut was_quoted, &mut out);
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keyword_dsns_give_the_search_path() {
        assert_eq!(
            app_search_path(
                "postgresql://rose:pw@db:5432/railway?sslmode=require&options=-c%20search_path%3Drose%2Cpublic"
            ),
            vec!["rose", "public"]
        );
        assert_eq!(
            app_search_path("postgresql://rose@db/railway?options=-csearch_path=Rose"),
            vec!["rose"]
        );
        assert_eq!(
            app_search_path(
                "host=db user=app dbname=x options='-c search_path=\"$user\",LG -c statement_timeout=5s'"
            ),
            vec!["app", "lg"]
        );
        assert_eq!(
            app_search_path("postgresql://u@h/db?options=-c%20search_path%3D%22My%5C%20Schema%22"),
            vec!["My Schema"]
        );
        assert_eq!(
            app_search_path("postgresql://u@h/db?options=--search-path%3Dlg"),
            vec!["lg"]
        );
    }

    #[test]
    fn no_option_or_garbage_gives_nothing() {
        assert!(app_search_path("postgresql://u:p@h/db?sslmode=disable").is_empty());
        assert!(app_search_path("postgresql://u@h/db?options=-c%20work_mem%3D4MB").is_empty());
        assert!(app_search_path("host=h options='-c search_path=").is_empty());
        assert!(app_search_path("%%%?options=%zz").is_empty());
        assert!(app_search_path("").is_empty());
        assert!(app_search_path("postgresql://h/db?options=%").is_empty());
    }
}
