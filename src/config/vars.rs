//! Environment variables the agent does not read. An `AGENT_*` name outside
//! [`super::raw::VARIABLES`] is almost always a misspelling (`AGENT_DATABSE_URL`), and the
//! setting it meant silently keeps its default: the agent reports each such name at start with
//! the closest name it does read, and a likely misspelling is also a finding
//! (`unknown_variable`).
//!
//! Only names are looked at, never values (a misspelled DSN variable holds a password).
//! `OTEL_*` names are not judged: that namespace is shared by every OpenTelemetry SDK in the
//! pod (`OTEL_TRACES_SAMPLER`, `OTEL_PROPAGATORS`, ... are set for the app and read by it), so a
//! name the agent does not read there is no mistake. Other software sets `AGENT_*` names too
//! (Azure Pipelines' `AGENT_NAME`, `AGENT_OS`; Jenkins' `AGENT_WORKDIR`): those are far from
//! every name the agent reads, so they are logged but are no finding.

use std::sync::OnceLock;

use super::raw::{Env, VARIABLES};

/// Every name the agent reads: the configuration's [`VARIABLES`] and the command line's `env`
/// fallbacks (`AGENT_CONFIG` for `--config`), taken from the clap definition itself.
pub fn known() -> &'static [&'static str] {
    // The command line's names are owned here (the clap definition they are read from is built
    // and dropped); `KNOWN` borrows them and the configuration's names.
    static FROM_CLI: OnceLock<Vec<String>> = OnceLock::new();
    static KNOWN: OnceLock<Vec<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let from_cli = FROM_CLI.get_or_init(|| {
            let mut names: Vec<String> = Vec::new();
            let mut stack = vec![<crate::cli::Cli as clap::CommandFactory>::command()];
            while let Some(cmd) = stack.pop() {
                for arg in cmd.get_arguments() {
                    if let Some(name) = arg.get_env().and_then(|e| e.to_str())
                        && !VARIABLES.contains(&name)
                        && !names.iter().any(|n| n == name)
                    {
                        names.push(name.to_owned());
                    }
                }
                stack.extend(cmd.get_subcommands().cloned());
            }
            names
        });
        VARIABLES
            .iter()
            .copied()
            .chain(from_cli.iter().map(String::as_str))
            .collect()
    })
}

/// The prefix of the agent's own variables (matched without regard to case: a lower-case
/// `agent_interval` is not read either).
pub(crate) const PREFIX: &str = "AGENT_";

/// At most this many unknown names are judged and reported (a hostile environment may hold
/// thousands); the rest are counted.
pub(crate) const MAX_REPORTED: usize = 20;

/// Longest name shown; longer names are cut (the distance is computed on the cut name).
const MAX_NAME_CHARS: usize = 64;

/// One `AGENT_*` variable that is set but not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The name as set, with anything but `[A-Za-z0-9_]` shown as `?` and cut at 64 characters.
    pub(crate) name: String,
    /// The closest name the agent reads.
    pub(crate) closest: &'static str,
    /// Edit distance (insertions, deletions, substitutions, adjacent transpositions) from the
    /// upper-cased name to `closest`.
    pub(crate) distance: usize,
}

impl UnknownVariable {
    /// Close enough to a name the agent reads to be a misspelling of it: at most two edits, or
    /// one per eight characters of longer names.
    pub(crate) fn likely_typo(&self) -> bool {
        self.distance <= (self.closest.len() / 8).max(2)
    }

    /// One line for the log and the finding; names only, never the value.
    pub fn message(&self) -> String {
        if self.likely_typo() {
            format!(
                "{} is set but the agent does not read it: did you mean {}?",
                self.name, self.closest
            )
        } else {
            format!(
                "{} is set but the agent does not read it (closest name it reads: {}); ignored",
                self.name, self.closest
            )
        }
    }
}

/// The `AGENT_*` variables set in `env` that the agent does not read, by name, at most
/// [`MAX_REPORTED`]; and how many more there were.
pub fn unknown(env: &dyn Env) -> (Vec<UnknownVariable>, usize) {
    let mut names: Vec<String> = env
        .names()
        .into_iter()
        .filter(|n| {
            n.get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        })
        .filter(|n| !known().contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    let omitted = names.len().saturating_sub(MAX_REPORTED);
    names.truncate(MAX_REPORTED);
    let found = names
        .iter()
        .map(|n| {
            let name = shown(n);
            let upper = name.to_ascii_uppercase();
            let (closest, distance) = known()
                .iter()
                .map(|k| (*k, distance(&upper, k)))
                .min_by_key(|(_, d)| *d)
                .unwrap_or(("AGENT_DATABASE_URL", usize::MAX));
            UnknownVariable {
                name,
                closest,
                distance,
            }
        })
        .collect();
    (found, omitted)
}

/// A name safe to show on one log line.
fn shown(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, so
/// `AGENT_INTERAVL` is one edit from `AGENT_INTERVAL`.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn unknown_in(names: &[&str]) -> Vec<UnknownVariable> {
        let env: HashMap<&str, &str> = names.iter().map(|n| (*n, "x")).collect();
        unknown(&env).0
    }

    #[test]
    fn command_line_variables_are_known() {
        assert!(known().contains(&"AGENT_CONFIG"), "{:?}", known());
        assert!(unknown_in(&["AGENT_CONFIG"]).is_empty());
        assert_eq!(unknown_in(&["AGENT_CONFG"])[0].closest, "AGENT_CONFIG");
    }

    #[test]
    fn distances() {
        assert_eq!(distance("AGENT_DATABSE_URL", "AGENT_DATABASE_URL"), 1);
        assert_eq!(distance("AGENT_INTERAVL", "AGENT_INTERVAL"), 1);
        assert_eq!(distance("AGENT_DATABASE_URI", "AGENT_DATABASE_URL"), 1);
        assert_eq!(distance("", "ABC"), 3);
        assert_eq!(distance("ABC", ""), 3);
        assert_eq!(distance("ABC", "ABC"), 0);
    }

    #[test]
    fn misspellings_are_named_with_the_closest_name() {
        let u = unknown_in(&[
            "AGENT_DATABSE_URL",
            "agent_interval",
            "AGENT_LISTEN",
            "DATABASE_URL",
            "PATH",
        ]);
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(u[0].name, "AGENT_DATABSE_URL");
        assert_eq!(u[0].closest, "AGENT_DATABASE_URL");
        assert!(u[0].likely_typo());
        assert!(
            u[0].message().contains("did you mean AGENT_DATABASE_URL?"),
            "{}",
            u[0].message()
        );
        assert_eq!(u[1].name, "agent_interval");
        assert_eq!((u[1].closest, u[1].distance), ("AGENT_INTERVAL", 0));
    }

    /// Names other software sets in the agent's environment are reported but are no
    /// misspelling.
    #[test]
    fn other_tools_agent_names_are_not_misspellings() {
        let others = [
            "AGENT_NAME",
            "AGENT_ID",
            "AGENT_OS",
            "AGENT_OSARCHITECTURE",
            "AGENT_MACHINENAME",
            "AGENT_HOMEDIRECTORY",
            "AGENT_TEMPDIRECTORY",
            "AGENT_TOOLSDIRECTORY",
            "AGENT_WORKFOLDER",
            "AGENT_JOBNAME",
            "AGENT_JOBSTATUS",
            "AGENT_VERSION",
            "AGENT_WORKDIR",
        ];
        for u in unknown_in(&others) {
            assert!(!u.likely_typo(), "{u:?}");
            assert!(u.message().contains("ignored"), "{}", u.message());
        }
    }

    #[test]
    fn hostile_names_are_bounded_and_shown_on_one_line() {
        let long = format!("AGENT_{}", "X".repeat(10_000));
        let mut names = vec!["AGENT_A\nB\u{1b}[31m", long.as_str()];
        let many: Vec<String> = (0..1000).map(|i| format!("AGENT_N{i}")).collect();
        names.extend(many.iter().map(String::as_str));
        let env: HashMap<&str, &str> = names.iter().map(|n| (*n, "v")).collect();
        let (u, omitted) = unknown(&env);
        assert_eq!(u.len(), MAX_REPORTED);
        assert_eq!(omitted, names.len() - MAX_REPORTED);
        for v in &u {
            assert!(v.name.len() <= MAX_NAME_CHARS, "{v:?}");
            assert!(
                v.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '?'),
                "{v:?}"
            );
        }
        let (u, _) = unknown(&HashMap::from([("AGENT_A\nB", "v")]));
        assert_eq!(u[0].name, "AGENT_A?B");
    }

    #[test]
    fn values_are_never_looked_at() {
        let env = HashMap::from([("AGENT_DATABSE_URL", "postgresql://u:Secret9@h/db")]);
        let (u, _) = unknown(&env);
        assert!(!format!("{u:?}{}", u[0].message()).contains("Secret9"));
    }
}

#[cfg(test)]
mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any names: no panic, at most MAX_REPORTED judged, every one shown on one line.
        #[test]
        fn any_names_never_panic(names in proptest::collection::vec("(?i:agent_)?.{0,80}", 0..40)) {
            let env: HashMap<String, String> =
                names.iter().map(|n| (n.clone(), "v".to_owned())).collect();
            let (u, omitted) = unknown(&env);
            prop_assert!(u.len() <= MAX_REPORTED);
            prop_assert!(u.len() + omitted <= names.len());
            for v in &u {
                prop_assert!(!v.message().contains('\n'));
                prop_assert!(v.name.len() <= MAX_NAME_CHARS);
            }
        }
    }
}
