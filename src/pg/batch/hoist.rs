//! Common table expressions that several parts of a round open with, defined once for the
//! whole combined statement. `pg_schema`, `pg_privileges`, `pg_table_sizes`,
//! `checkpoint_threads` and `checkpoint_migration` each start by finding LangGraph's schema
//! (`lg`); `pg_activity`, `pg_connections` and `pg_connection_budget` by reading the client sessions
//! (`a`), the last two then counting them by group (`g`): as
//! parts of one statement each would compute it again. Hoisted, it is computed once (a common
//! table expression referenced more than once is materialized) and planned once.
//!
//! A part keeps its meaning: a definition is hoisted only when at least two parts open with the
//! very same text, and a part whose own definition of that name differs keeps it (an inner `WITH`
//! shadows the outer one). Parts that run alone keep their own text.

/// A part's first common table expression: its name, its definition
/// (`name[(columns)] AS (body)`) and the part without it.
fn first_cte(part: &str) -> Option<(&str, &str, String)> {
    let p = part.trim_start();
    let head = p.get(..5)?;
    if !head.eq_ignore_ascii_case("with ") {
        return None;
    }
    let def_start = 5 + (p[5..].len() - p[5..].trim_start().len());
    let rest = &p[def_start..];
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    if name.is_empty() || name.eq_ignore_ascii_case("recursive") {
        return None;
    }
    let mut i = def_start + name_len;
    if p[i..].starts_with('(') {
        i = closing(p, i)? + 1;
    }
    let after = p[i..].trim_start();
    let as_at = p.len() - after.len();
    if !after
        .get(..3)
        .is_some_and(|s| s.eq_ignore_ascii_case("as ") || s.eq_ignore_ascii_case("as("))
    {
        return None;
    }
    let body = p[as_at + 2..].trim_start();
    let body_at = p.len() - body.len();
    if !body.starts_with('(') {
        return None; // `AS MATERIALIZED (...)` and the like: left alone.
    }
    let end = closing(p, body_at)? + 1;
    let def = &p[def_start..end];
    let tail = p[end..].trim_start();
    let without = match tail.strip_prefix(',') {
        Some(more) => format!("WITH {}", more.trim_start()),
        None => tail.to_owned(),
    };
    Some((name, def, without))
}

/// The index of the parenthesis that closes the one at `open`, skipping string literals
/// (`'...'` with `''`, `E'...'` with backslash escapes) and quoted identifiers.
fn closing(s: &str, open: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            q @ (b'\'' | b'"') => {
                let escapes = q == b'\''
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'));
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' if escapes => i += 1,
                        c if *c == q => {
                            if b.get(i + 1) == Some(&q) {
                                i += 1;
                            } else {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Pure: the definitions to hoist (in order of first use) and the parts without them. Parts
/// that share their first definition and then their next (`WITH a AS (...), g AS (... a ...)`)
/// have both hoisted, in that order: each pass takes the first definition the parts left open
/// with, under a name not hoisted yet.
pub(crate) fn hoist(parts: &[String]) -> (Vec<String>, Vec<String>) {
    let mut defs: Vec<(String, String)> = Vec::new();
    let mut out = parts.to_vec();
    loop {
        let (more, rest) = hoist_once(&out, &defs);
        if more.is_empty() {
            return (defs.into_iter().map(|(_, d)| d).collect(), out);
        }
        defs.extend(more);
        out = rest;
    }
}

/// One pass of [`hoist`]: (name, definition) pairs under names not in `taken`.
fn hoist_once(
    parts: &[String],
    taken: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let firsts: Vec<Option<(&str, &str, String)>> = parts.iter().map(|p| first_cte(p)).collect();
    // Per name, the definition most parts open with (first seen on a tie), if two or more do.
    let mut chosen: Vec<(&str, &str)> = Vec::new();
    for (name, _, _) in firsts.iter().flatten() {
        if chosen.iter().any(|(n, _)| n == name) || taken.iter().any(|(n, _)| n == name) {
            continue;
        }
        let count = |d: &str| {
            firsts
                .iter()
                .flatten()
                .filter(|(n, x, _)| n == name && *x == d)
                .count()
        };
        let best = firsts
            .iter()
            .flatten()
            .filter(|(n, _, _)| n == name)
            .map(|(_, d, _)| *d)
            .fold(None::<&str>, |best, d| match best {
                Some(b) if count(b) >= count(d) => Some(b),
                _ => Some(d),
            });
        if let Some(d) = best.filter(|d| count(d) >= 2) {
            chosen.push((name, d));
        }
    }
    let out = parts
        .iter()
        .zip(&firsts)
        .map(|(p, f)| match f {
            Some((name, def, without)) if chosen.contains(&(*name, *def)) => without.clone(),
            _ => p.clone(),
        })
        .collect();
    let chosen = chosen
        .iter()
        .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
        .collect();
    (chosen, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_definition_two_parts_open_with_is_hoisted_once() {
        let lg = "lg(sch, src) AS (SELECT 'public', 'default')";
        let parts = v(&[
            &format!("WITH {lg} SELECT sch FROM lg"),
            &format!("WITH {lg}, t AS (SELECT 1 FROM lg) SELECT count(*) FROM t"),
            "SELECT 1",
        ]);
        let (defs, out) = hoist(&parts);
        assert_eq!(defs, vec![lg.to_owned()]);
        assert_eq!(
            out,
            v(&[
                "SELECT sch FROM lg",
                "WITH t AS (SELECT 1 FROM lg) SELECT count(*) FROM t",
                "SELECT 1"
            ])
        );
    }

    #[test]
    fn a_shared_second_definition_is_hoisted_after_the_first() {
        let a = "a AS (SELECT 1 AS x)";
        let g = "g AS (SELECT x FROM a)";
        let parts = v(&[
            &format!("WITH {a}, {g} SELECT x FROM g"),
            &format!("WITH {a}, {g} SELECT x + 1 FROM g"),
            &format!("WITH {a}, d AS (SELECT x FROM a) SELECT x FROM d"),
            // Its own `a` stays, and so does the `g` built on it.
            &format!("WITH a AS (SELECT 2 AS x), {g} SELECT x FROM g"),
        ]);
        let (defs, out) = hoist(&parts);
        assert_eq!(defs, vec![a.to_owned(), g.to_owned()]);
        assert_eq!(
            out,
            v(&[
                "SELECT x FROM g",
                "SELECT x + 1 FROM g",
                "WITH d AS (SELECT x FROM a) SELECT x FROM d",
                &parts[3],
            ])
        );
    }

    #[test]
    fn a_lone_or_different_definition_stays_in_its_part() {
        let parts = v(&[
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "WITH a AS (SELECT 2 AS x) SELECT x FROM a",
            "WITH a AS (SELECT 2 AS x) SELECT x + 1 FROM a",
            "WITH b AS (SELECT 3) SELECT * FROM b",
        ]);
        let (defs, out) = hoist(&parts);
        // The definition two parts share is hoisted; the other `a` shadows it in its part.
        assert_eq!(defs, vec!["a AS (SELECT 2 AS x)".to_owned()]);
        assert_eq!(out[0], parts[0]);
        assert_eq!(out[1], "SELECT x FROM a");
        assert_eq!(out[3], parts[3]);
    }

    #[test]
    fn strings_identifiers_and_odd_shapes_are_read_right() {
        // Parentheses inside literals (plain, doubled quotes, E'' with escapes) and quoted
        // identifiers do not end the definition.
        let def = r#"a AS (SELECT ')', 'it''s (', E'\')(', "x)y" FROM t WHERE n LIKE 'pg\_%')"#;
        let parts = v(&[
            &format!("WITH {def} SELECT 1"),
            &format!("with {def} SELECT 2"),
        ]);
        let (defs, out) = hoist(&parts);
        assert_eq!(defs, vec![def.to_owned()]);
        assert_eq!(out, v(&["SELECT 1", "SELECT 2"]));
        // Recursive, materialized or unbalanced ones are left alone.
        for odd in [
            "WITH RECURSIVE r(n) AS (SELECT 1) SELECT * FROM r",
            "WITH m AS MATERIALIZED (SELECT 1) SELECT * FROM m",
            "WITH u AS (SELECT (1) SELECT 2",
        ] {
            let (defs, out) = hoist(&v(&[odd, odd]));
            assert!(defs.is_empty(), "{odd}");
            assert_eq!(out, v(&[odd, odd]));
        }
    }
}
