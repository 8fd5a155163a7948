//! Fuzzes the web config file (YAML) and the `Authorization` header check: rejected with
//! messages or accepted, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rose_agent::web::WebConfig;

/// One runtime for every input (verification runs bcrypt on its blocking pool).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, header) = s.split_once('\0').unwrap_or((s, ""));
    match WebConfig::from_yaml(yaml, "web.yml") {
        Ok(w) => {
            // A bcrypt hash sets its own cost (up to 2^31 rounds): not a parser question.
            if let (Some(auth), false) = (w.auth, yaml.contains("$2")) {
                let _ = runtime().block_on(auth.verify(Some(header)));
            }
        }
        Err(problems) => assert!(!problems.is_empty() && problems.iter().all(|p| !p.is_empty())),
    }
});
