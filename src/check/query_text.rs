//! Normalized SQL text of other sessions' statements, safe to show in findings, logs and alerts:
//! every literal replaced by `?` (string constants in all their forms: `'...'`, `E'...'`,
//! `U&'...'`, `B'...'`, `X'...'`, `N'...'`, dollar-quoted `$tag$...$tag$`; and numbers),
//! comments dropped (they can carry anything), whitespace collapsed, length bounded. Keywords,
//! identifiers, operators and `$n` parameters are kept, so the shape of the statement stays
//! readable: `ALTER ROLE x PASSWORD 'hunter2'` becomes `ALTER ROLE x PASSWORD ?`.
//!
//! Pure and total: any input (arbitrary UTF-8, truncated statements, unterminated literals or
//! comments) gives an answer and never panics. When the lexing is ambiguous, the rest is hidden
//! rather than guessed: a backslash inside a plain `'...'` literal means one thing with
//! `standard_conforming_strings = on` and another with `off`, so the text after such a literal is
//! replaced by `…`; an unterminated literal, quoted identifier or comment hides everything after
//! its start the same way. Bare words are kept as written, so a secret typed as an unquoted
//! identifier (not a literal) would show.

/// Marks text left out: over the length bound, or hidden because the lexing was ambiguous.
pub(crate) const ELLIPSIS: char = '…';

/// What replaces a literal.
pub(crate) const PLACEHOLDER: &str = "?";

/// The statement with literals replaced by `?`, comments dropped and whitespace collapsed, at most
/// `max_chars` characters (plus a trailing `…` when cut).
pub(crate) fn normalize(sql: &str, max_chars: usize) -> String {
    let c: Vec<char> = sql.chars().collect();
    let mut out = Out::new(max_chars);
    let mut i = 0;
    while i < c.len() && !out.full {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if is_space(ch) || ch.is_ascii_control() {
            // PostgreSQL's own white space; other ASCII controls are one-character tokens to
            // its lexer, so they end a token here too.
            out.space();
            i += 1;
        } else if ch == '-' && next == Some('-') {
            // Line comment: to the end of the line.
            while i < c.len() && c[i] != '\n' && c[i] != '\r' {
                i += 1;
            }
            out.space();
        } else if ch == '/' && next == Some('*') {
            // Block comment; PostgreSQL's nest.
            match skip_block_comment(&c, i) {
                Some(end) => {
                    out.space();
                    i = end;
                }
                None => return out.hide_rest(),
            }
        } else if ch == '\'' {
            match plain_string(&c, i) {
                Some((end, ambiguous)) => {
                    out.literal();
                    if ambiguous {
                        return out.hide_rest();
                    }
                    i = end;
                }
                None => {
                    out.literal();
                    return out.hide_rest();
                }
            }
        } else if ch == '"' {
            match quoted_end(&c, i, '"') {
                Some(end) => {
                    out.token(&c[i..end].iter().collect::<String>());
                    i = end;
                }
                None => return out.hide_rest(),
            }
        } else if ch == '$' && next.is_some_and(|n| n.is_ascii_digit()) {
            // Parameter `$n` (with any trailing junk, so no word starts right after it).
            let mut end = i + 1;
            while end < c.len() && is_ident_cont(c[end]) {
                end += 1;
            }
            out.token(&c[i..end].iter().collect::<String>());
            i = end;
        } else if ch == '$' {
            match dollar_tag(&c, i) {
                Some(tag_end) => {
                    let tag = &c[i..tag_end];
                    out.literal();
                    match find_seq(&c, tag_end, tag) {
                        Some(at) => i = at + tag.len(),
                        None => return out.hide_rest(),
                    }
                }
                None => {
                    out.token("$");
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() || (ch == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            i = number_end(&c, i);
            out.literal();
        } else if is_ident_start(ch) {
            let mut end = i + 1;
            while end < c.len() && is_ident_cont(c[end]) {
                end += 1;
            }
            let word: String = c[i..end].iter().collect();
            let after = c.get(end).copied();
            let after2 = c.get(end + 1).copied();
            let one = |set: &str| word.len() == 1 && set.contains(word.as_str());
            if after == Some('\'') && one("eE") {
                // Escape string: backslash escapes, and '' too.
                match escape_string_end(&c, end) {
                    Some(e) => {
                        out.literal();
                        i = e;
                    }
                    None => {
                        out.literal();
                        return out.hide_rest();
                    }
                }
            } else if after == Some('\'') && one("bBxXnN") {
                // Bit-string, hex and national-character constants: the literal alone.
                i = end;
            } else if after == Some('&') && after2 == Some('\'') && one("uU") {
                // Unicode-escape string: lexed as a plain literal, its backslashes ambiguous.
                i = end + 1;
            } else {
                out.token(&word);
                i = end;
            }
        } else {
            out.token(&ch.to_string());
            i += 1;
        }
    }
    out.finish()
}

/// The output being built, bounded.
struct Out {
    s: String,
    n: usize,
    max: usize,
    pending_space: bool,
    full: bool,
}

impl Out {
    fn new(max: usize) -> Out {
        Out {
            s: String::new(),
            n: 0,
            max,
            pending_space: false,
            full: false,
        }
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn literal(&mut self) {
        self.token(PLACEHOLDER);
    }

    fn token(&mut self, t: &str) {
        if self.full {
            return;
        }
        if self.pending_space && self.n > 0 {
            self.push(' ');
        }
        self.pending_space = false;
        for ch in t.chars() {
            // Only printable text goes out, whatever an identifier held.
            self.push(if ch.is_control() { ' ' } else { ch });
        }
    }

    fn push(&mut self, ch: char) {
        if self.full {
            return;
        }
        if self.n >= self.max {
            self.full = true;
            return;
        }
        self.s.push(ch);
        self.n += 1;
    }

    /// Everything from here on is hidden.
    fn hide_rest(mut self) -> String {
        self.full = true;
        self.finish()
    }

    fn finish(mut self) -> String {
        if self.full {
            let t = self.s.trim_end().len();
            self.s.truncate(t);
            self.s.push(ELLIPSIS);
        }
        self.s
    }
}

/// PostgreSQL's white space (`scan.l`): ASCII only; any other character is part of a word.
fn is_space(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

/// As PostgreSQL's lexer: letters, `_`, and every non-ASCII character.
fn is_ident_start(ch: char) -> bool {
    ch.is_ascii_alphabetic() || ch == '_' || !ch.is_ascii()
}

fn is_ident_cont(ch: char) -> bool {
    is_ident_start(ch) || ch.is_ascii_digit() || ch == '$'
}

/// End (exclusive) of a block comment starting at `i` (`/*`), nesting; `None` if unterminated.
fn skip_block_comment(c: &[char], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i + 1 < c.len() {
        if c[i] == '/' && c[i + 1] == '*' {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// End (exclusive) of a `'...'` literal starting at `i`, and whether it held a backslash (whose
/// meaning depends on `standard_conforming_strings`); `None` if unterminated.
fn plain_string(c: &[char], i: usize) -> Option<(usize, bool)> {
    let end = quoted_end(c, i, '\'')?;
    Some((end, c[i..end].contains(&'\\')))
}

/// End (exclusive) of a literal quoted by `q` at `i`, where a doubled `q` is an escaped one.
fn quoted_end(c: &[char], i: usize, q: char) -> Option<usize> {
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == q {
            if c.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// End (exclusive) of an `E'...'` literal whose quote is at `i`.
fn escape_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            '\'' if c.get(j + 1) == Some(&'\'') => j += 2,
            '\'' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// End (exclusive) of a dollar-quote opening tag (`$$` or `$tag$`) at `i`, if one starts there.
fn dollar_tag(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if c.get(j) == Some(&'$') {
        return Some(j + 1);
    }
    if !c.get(j).is_some_and(|&ch| is_ident_start(ch)) {
        return None;
    }
    while j < c.len() && is_ident_cont(c[j]) && c[j] != '$' {
        j += 1;
    }
    (c.get(j) == Some(&'$')).then_some(j + 1)
}

/// Where `needle` next occurs in `c` at or after `from`.
fn find_seq(c: &[char], from: usize, needle: &[char]) -> Option<usize> {
    if needle.is_empty() || c.len() < needle.len() {
        return None;
    }
    (from..=c.len() - needle.len()).find(|&k| &c[k..k + needle.len()] == needle)
}

/// End (exclusive) of a numeric constant at `i`: digits, letters (hex, octal, binary prefixes,
/// exponents, trailing junk), `_` separators, `.`, and an exponent's sign.
fn number_end(c: &[char], i: usize) -> usize {
    let mut j = i;
    while j < c.len() {
        let ch = c[j];
        let part = ch.is_ascii_alphanumeric() || ch == '_' || ch == '.';
        let exponent_sign = (ch == '+' || ch == '-')
            && j > i
            && matches!(c[j - 1], 'e' | 'E')
            && c.get(j + 1).is_some_and(|n| n.is_ascii_digit());
        if !(part || exponent_sign) {
            break;
        }
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> String {
        normalize(s, 256)
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            n("ALTER ROLE x PASSWORD 'hunter2'"),
            "ALTER ROLE x PASSWORD ?"
        );
        assert_eq!(
            n("SELECT pg_sleep(30) /* */ , 'hunter2'"),
            "SELECT pg_sleep(?) , ?"
        );
        assert_eq!(
            n("select * from t where a = 'it''s' and b = E'x\\'y' and c = $1"),
            "select * from t where a = ? and b = ? and c = $1"
        );
        assert_eq!(n("SELECT $$a 'b' c$$, $f$ x $$ y $f$, 1"), "SELECT ?, ?, ?");
        assert_eq!(
            n("SELECT 1.5e-3, .5, 0xFF, 1_000, -7"),
            "SELECT ?, ?, ?, ?, -?"
        );
        assert_eq!(
            n("SELECT X'ff', B'01', N'n', U&'d\\0061'"),
            "SELECT ?, ?, ?, ?…"
        );
        assert_eq!(
            n("SELECT \"Col\"\"x\", a$b$ FROM t -- secret\nWHERE /* a /* b */ c */ x"),
            "SELECT \"Col\"\"x\", a$b$ FROM t WHERE x"
        );
        assert_eq!(n("  SELECT\n\t1  "), "SELECT ?");
    }

    #[test]
    fn ambiguous_or_unterminated_text_is_hidden() {
        // With standard_conforming_strings = off the literal would go on past `\'`.
        assert_eq!(n("SELECT 'a\\' , 'hunter2'"), "SELECT ?…");
        assert_eq!(n("SELECT 'unterminated hunter2"), "SELECT ?…");
        assert_eq!(n("SELECT E'unterminated \\' hunter2"), "SELECT ?…");
        assert_eq!(n("SELECT $q$ hunter2"), "SELECT ?…");
        assert_eq!(n("SELECT 1 /* hunter2"), "SELECT ?…");
        assert_eq!(n("SELECT \"hunter2"), "SELECT…");
        // Words end where PostgreSQL's end: no-break space is a word character there, so `E`
        // does not start an escape string; a parameter's trailing junk stays with it.
        assert_eq!(n("SELECT \u{a0}E'a\\' , 'hunter2'"), "SELECT \u{a0}E?…");
        assert_eq!(n("SELECT $1E'a\\' , 'hunter2'"), "SELECT $1E?…");
    }

    #[test]
    fn output_is_bounded() {
        let long = format!("SELECT {}", "abc, ".repeat(200));
        let out = normalize(&long, 50);
        assert_eq!(out.chars().count(), 51);
        assert!(out.ends_with(ELLIPSIS));
        assert_eq!(normalize("SELECT 1", 0), "…");
        assert_eq!(normalize("", 10), "");
    }

    /// How a secret is written as a literal, PostgreSQL's way.
    fn as_literal(kind: u8, secret: &str) -> String {
        match kind % 7 {
            0 => format!("'{}'", secret.replace('\'', "''")),
            1 => format!("E'{}'", secret.replace('\\', "\\\\").replace('\'', "\\'")),
            2 => format!("e'{}'", secret.replace('\\', "\\\\").replace('\'', "''")),
            3 if !secret.contains("$$") && !secret.ends_with('$') => format!("$${secret}$$"),
            4 if !secret.contains("$tag$") && !secret.ends_with("$tag") => {
                format!("$tag${secret}$tag$")
            }
            5 => format!("U&'{}'", secret.replace('\'', "''")),
            _ => {
                let mut s = secret.to_owned();
                while s.contains("*/") {
                    s = s.replace("*/", "");
                }
                format!("/* {s} */ 'x'")
            }
        }
    }

    /// Tokens that cannot spell the 7-character secret by themselves.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "SELECT", "FROM", "WHERE", "ALTER", "ROLE", "PASSWORD", "(", ")", ",", ";", "=",
                "::", "||", "*", "+", "-", "$1", "$23", "pg_sleep", "NULL", "E", "U", "&", "$",
            ])
            .prop_map(str::to_owned),
            "[a-z_][a-z0-9_$]{0,5}",
            "\"[a-z ]{0,5}\"",
            "[0-9]{1,5}(\\.[0-9]{1,3})?",
            "'[a-z ]{0,6}'",
            "-- [a-z ]{0,10}\n",
            "/\\* [a-z ]{0,10} \\*/",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Arbitrary SQL around a known secret literal, in any of PostgreSQL's literal forms:
        /// the secret never appears in the output.
        #[test]
        fn a_secret_literal_never_shows(
            before in prop::collection::vec(token(), 0..12),
            after in prop::collection::vec(token(), 0..12),
            seps in prop::collection::vec(prop::sample::select(vec![" ", "\n", "\t", "  "]), 25),
            kind in any::<u8>(),
            prefix in ".{0,8}",
            suffix in ".{0,8}",
            max in 0usize..300,
        ) {
            let secret = format!("{prefix}hunter2{suffix}");
            let mut sql = String::new();
            let lit = as_literal(kind, &secret);
            for (k, t) in before.iter().chain(std::iter::once(&lit)).chain(after.iter()).enumerate() {
                sql.push_str(t);
                sql.push_str(seps[k % seps.len()]);
            }
            let out = normalize(&sql, max);
            prop_assert!(!out.contains("hunter2"), "{sql:?} -> {out:?}");
            prop_assert!(out.chars().count() <= max + 1);
        }

        /// Any text: an answer, bounded, without control characters, never a panic.
        #[test]
        fn any_text_is_total_and_bounded(s in ".{0,400}", max in 0usize..300) {
            let out = normalize(&s, max);
            prop_assert!(out.chars().count() <= max + 1);
            prop_assert!(!out.chars().any(char::is_control));
        }

        /// Any bytes (as PostgreSQL may hand over a statement cut mid-character, decoded lossily).
        #[test]
        fn any_bytes_are_total(b in prop::collection::vec(any::<u8>(), 0..400)) {
            let s = String::from_utf8_lossy(&b);
            let out = normalize(&s, 256);
            prop_assert!(out.chars().count() <= 257);
        }
    }
}
