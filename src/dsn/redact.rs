//! The crate-wide secret scrubber: passwords out of any text that may hold a connection string
//! in either libpq form (a driver error, an echoed config value) before it is logged or shown.

/// A configured URL for an error message: shown (redacted) only when it cannot hold
/// credentials, i.e. has no '@'; a URL without its scheme (`user:pw@host`) escapes
/// [`redact`], so it is not shown at all.
pub(crate) fn url_for_message(url: &str) -> String {
    if url.contains('@') {
        "the value (not shown: it may hold credentials)".to_owned()
    } else {
        format!("'{}'", redact(url))
    }
}

/// Scrubs passwords from any text that may hold a DSN in either form: `scheme://user:PASS@`
/// becomes `scheme://user:****@`, and `password=PASS` / `password='PASS'` becomes `password=****`.
/// Used on foreign text (driver errors, echoed input) before it is logged or shown.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // URL form: everything between "://user:" and the last '@' before the next whitespace.
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let token = &tail[..end];
        match (token.rfind('@'), token.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&token[..colon + 1]);
                out.push_str("****");
                out.push_str(&token[at..]);
            }
            _ => out.push_str(token),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_kv(&out)
}

fn redact_kv(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(off) = lower[pos..].find("password") {
        let start = pos + off;
        let mut j = start + "password".len();
        let bytes = text.as_bytes();
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && (bytes[j] == b'=' || bytes[j] == b':') {
            j += 1;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            out.push_str(&text[pos..j]);
            out.push_str("****");
            let mut k = j;
            if k < bytes.len() && (bytes[k] == b'\'' || bytes[k] == b'"') {
                let q = bytes[k];
                k += 1;
                while k < bytes.len() && bytes[k] != q {
                    k += if bytes[k] == b'\\' { 2 } else { 1 };
                }
                k = (k + 1).min(bytes.len());
            } else {
                while k < bytes.len()
                    && !bytes[k].is_ascii_whitespace()
                    && bytes[k] != b'&'
                    && bytes[k] != b','
                {
                    k += 1;
                }
            }
            pos = k;
        } else {
            out.push_str(&text[pos..j]);
            pos = j;
        }
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_scrubs_both_forms() {
        let t = "failed postgresql://u:hunter2@h/db and host=h password=hunter3 user=u and password = 'x y'";
        let r = redact(t);
        assert!(
            !r.contains("hunter2") && !r.contains("hunter3") && !r.contains("x y"),
            "{r}"
        );
        assert!(r.contains("postgresql://u:****@h/db"), "{r}");
    }
}
