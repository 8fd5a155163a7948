//! Fuzzes DSN parsing (URL and key=value) and redaction: no panic, and a password that was
//! given never comes back out of an error, the target, Debug or the redacted URL.
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
    // The same input with a known password spliced in, in both forms.
    for dsn in [
        format!("postgresql://u:{SECRET}@{s}"),
        format!("host=h password={SECRET} {s}"),
    ] {
        match Dsn::parse(&dsn) {
            Ok(d) => {
                assert!(!d.target().contains(SECRET));
                assert!(!format!("{d:?}").contains(SECRET));
                assert!(!d.redacted_url().contains(SECRET));
            }
            Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        }
        assert!(!redact(&dsn).contains(SECRET), "{dsn}");
    }
});
