//! Fuzzes DSN parsing (URL and key=value) and redaction: no panic; an error never shows any of
//! the input (so never a password, whatever surrounds it: a missing or broken scheme, junk,
//! quotes); a parsed DSN never shows its password in the target, Debug or the redacted URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rose_agent::dsn::{Dsn, redact};

const SECRET: &str = "Zq9SecretZq";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact(s);
    let _ = Dsn::parse(s);
    if s.contains(SECRET) {
        return; // the secret elsewhere in the text (a host, a path) is not a password to hide
    }
    // The same input with a known password spliced in, around it and in both forms.
    for dsn in [
        format!("postgresql://u:{SECRET}@{s}"),
        format!("host=h password={SECRET} {s}"),
        format!("u:{SECRET}@{s}"),
        format!("postgresql:/u:{SECRET}@{s}"),
        format!("{s}{SECRET}"),
        format!("{SECRET}{s}"),
    ] {
        match Dsn::parse(&dsn) {
            Ok(d) => {
                let public = format!("{} {}", d.user, d.target());
                if !public.contains(SECRET) {
                    assert!(!format!("{d:?}").contains(SECRET));
                    assert!(!d.redacted_url().contains(SECRET));
                }
            }
            Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        }
    }
    for dsn in [
        format!("postgresql://u:{SECRET}@{s}"),
        format!("host=h password={SECRET} {s}"),
    ] {
        assert!(!redact(&dsn).contains(SECRET), "{dsn}");
    }
});
