//! The floors of the crate (issue 17, docs/architecture.md): every module lives on one floor and
//! imports only from its own floor or the floors below, with no import cycle between modules of
//! one floor. This test reads every `crate::...` / `super::...` path in `src/**/*.rs` (comments,
//! doc comments, string literals and `#[cfg(test)]` modules aside), maps the module it names to
//! a floor by the longest prefix in [`FLOORS`], and fails naming the file and line of each
//! upward import, each module without a floor (a new file must be placed) and each cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path prefix -> floor. The longest matching prefix wins (`findings::codes` is
/// vocabulary, the rest of `findings` is judgement). `main` is the binary crate's root.
const FLOORS: &[(&str, u8)] = &[
    // 0 base
    ("dsn", 0),
    ("error", 0),
    ("files", 0),
    // 1 vocabulary
    ("config", 1),
    ("catalog", 1),
    ("findings::codes", 1),
    ("cli", 1),
    // 2 drivers
    ("pg", 2),
    ("sqlite", 2),
    // 3 checks
    ("check", 3),
    // 4 facts
    ("snapshot", 4),
    // 5 judgement
    ("findings", 5),
    // 6 outputs
    ("render", 6),
    ("exposition", 6),
    ("alerting", 6),
    ("server", 6),
    ("web", 6),
    ("telemetry", 6),
    ("status", 6),
    ("reading", 6),
    // 7 runtime
    ("run", 7),
    ("scheduler", 7),
    ("leader", 7),
    // 8 commands
    ("diagnose", 8),
    ("status::client", 8),
    ("main", 8),
];

const FLOOR_NAMES: [&str; 9] = [
    "base",
    "vocabulary",
    "drivers",
    "checks",
    "facts",
    "judgement",
    "outputs",
    "runtime",
    "commands",
];

/// Same-floor cycles that another branch of issue 17 removes (each names why it is here). The
/// test fails when one of them is gone, so the list only shrinks.
const KNOWN_CYCLES: &[&[&str]] = &[];

fn floor_of(module: &str) -> Option<u8> {
    FLOORS
        .iter()
        .filter(|(prefix, _)| {
            module == *prefix
                || module
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, f)| *f)
}

fn describe(module: &str) -> String {
    match floor_of(module) {
        Some(f) => format!("`{module}` (floor {f} {})", FLOOR_NAMES[f as usize]),
        None => format!("`{module}` (no floor)"),
    }
}

/// `src/a/mod.rs` -> `a`, `src/a/b.rs` -> `a::b`, `src/lib.rs` -> `` (the root), `src/main.rs`
/// -> `main`. `None` for files of other crates (`src/bin/`).
fn module_of(rel: &str) -> Option<String> {
    let rel = rel.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel.starts_with("bin/") {
        return None;
    }
    let mut parts: Vec<&str> = rel.split('/').collect();
    if matches!(parts.last(), Some(&"mod") | Some(&"lib")) {
        parts.pop();
    }
    Some(parts.join("::"))
}

/// The text with comments, string and char literals blanked (newlines kept, so lines still
/// count).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !prev_is_ident(&b, i)
            && raw_string_start(&b, i + usize::from(c == 'b')).is_some()
        {
            let start = i + usize::from(c == 'b');
            let hashes = raw_string_start(&b, start).unwrap_or(0);
            // r, hashes, quote
            let mut j = start + 1 + hashes + 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\'', '\u{..}') or a lifetime ('a).
            let close = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&k| b[k] == '\'' && k > i + 2)
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(k) => {
                    for _ in i..=k {
                        out.push(' ');
                    }
                    i = k + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// At `r` of a raw string (`r"`, `r#"`): the number of `#`.
fn raw_string_start(b: &[char], i: usize) -> Option<usize> {
    if b.get(i) != Some(&'r') {
        return None;
    }
    let mut j = i + 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some(j - i - 1)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    Path,
}

/// Tokens with their line numbers (identifiers, `::` and single punctuation; whitespace gone).
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let s = i;
            i += 1;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(b[s..i].iter().collect()), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// One path a file names: where, and the absolute module path segments it reaches.
#[derive(Debug)]
struct Use {
    line: usize,
    /// The module the path is written in (inline modules included).
    from: String,
    target: Vec<String>,
}

/// Parses a use-tree at `i` (after a `::`): `a::b`, `{a, b::{c, d}}`, `*`; appends each leaf
/// path (prefixed with `base`) to `out`; returns the index after the tree.
fn use_tree(
    t: &[(Tok, usize)],
    mut i: usize,
    base: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = base.to_vec();
    loop {
        match t.get(i).map(|x| &x.0) {
            Some(Tok::Ident(id)) => {
                path.push(id.clone());
                i += 1;
                if t.get(i).map(|x| &x.0) == Some(&Tok::Path) {
                    i += 1;
                    continue;
                }
                out.push(path);
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(path);
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match t.get(i).map(|x| &x.0) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = use_tree(t, i, &path, out);
                            // `self` in a group names the group's module itself.
                            if let Some(last) = out.last_mut()
                                && last.last().is_some_and(|s| s == "self")
                            {
                                last.pop();
                            }
                            // `x as y`
                            if t.get(i).map(|x| &x.0) == Some(&Tok::Ident("as".into())) {
                                i += 2;
                            }
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                out.push(path);
                return i;
            }
        }
    }
}

/// Every crate-internal path of one file, resolved to absolute segments; `#[cfg(test)]` items
/// skipped. Also returns the names of `#[cfg(test)] mod x;` declarations (files to skip).
fn uses(module: &str, src: &str) -> (Vec<Use>, Vec<String>) {
    let t = tokens(&strip(src));
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    let mut out = Vec::new();
    let mut test_mods = Vec::new();
    // Inline modules: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let is = |i: usize, tok: Tok| t.get(i).map(|x| &x.0) == Some(&tok);
    let ident = |i: usize| match t.get(i).map(|x| &x.0) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    while i < t.len() {
        // `#[cfg(test)]` then an item: skip the item (to its `;` or its matching `}`).
        if is(i, Tok::Punct('#'))
            && is(i + 1, Tok::Punct('['))
            && ident(i + 2) == Some("cfg")
            && is(i + 3, Tok::Punct('('))
            && ident(i + 4) == Some("test")
            && is(i + 5, Tok::Punct(')'))
            && is(i + 6, Tok::Punct(']'))
        {
            let mut j = i + 7;
            let mut k = j;
            while matches!(ident(k), Some("pub") | Some("mod")) {
                k += 1;
                // `pub(crate)`, `pub(super)`, `pub(in path)`.
                if ident(k - 1) == Some("pub") && is(k, Tok::Punct('(')) {
                    while k < t.len() && !is(k, Tok::Punct(')')) {
                        k += 1;
                    }
                    k += 1;
                }
            }
            if ident(k - 1) == Some("mod")
                && let Some(name) = ident(k)
                && is(k + 1, Tok::Punct(';'))
            {
                test_mods.push(name.to_owned());
            }
            let mut d = 0usize;
            while j < t.len() {
                match t[j].0 {
                    Tok::Punct('{') => d += 1,
                    Tok::Punct('}') => {
                        d -= 1;
                        if d == 0 {
                            break;
                        }
                    }
                    Tok::Punct(';') if d == 0 => break,
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        match &t[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let Some(name) = ident(i + 1)
                    && is(i + 2, Tok::Punct('{'))
                {
                    inline.push((name.to_owned(), depth));
                }
            }
            Tok::Ident(k)
                if (k == "crate" || k == "$crate" || k == "super")
                    && is(i + 1, Tok::Path)
                    && !(i > 0 && is(i - 1, Tok::Path)) =>
            {
                let mut cur: Vec<String> = here.clone();
                cur.extend(inline.iter().map(|(n, _)| n.clone()));
                let from = cur.join("::");
                let line = t[i].1;
                let mut j = i;
                let mut base: Vec<String> = if k == "super" {
                    cur.clone()
                } else {
                    Vec::new()
                };
                // Climb `super::super::...`.
                while ident(j) == Some("super") && is(j + 1, Tok::Path) {
                    base.pop();
                    j += 2;
                }
                if k != "super" {
                    j = i + 2;
                }
                let mut paths = Vec::new();
                let end = use_tree(&t, j, &base, &mut paths);
                for target in paths {
                    out.push(Use {
                        line,
                        from: from.clone(),
                        target,
                    });
                }
                i = end.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (out, test_mods)
}

/// The floor problems of a set of files (`src/...` path, text).
fn check(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    // Files declared `#[cfg(test)] mod x;` are test code.
    let mut parsed = Vec::new();
    let mut test_files = BTreeSet::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let (u, test_mods) = uses(&module, text);
        for m in test_mods {
            test_files.insert(if module.is_empty() {
                m
            } else {
                format!("{module}::{m}")
            });
        }
        parsed.push((path.clone(), module, u));
    }
    let mut modules: BTreeSet<String> = BTreeSet::new();
    for (_, module, uses) in &parsed {
        modules.insert(module.clone());
        for u in uses {
            modules.insert(u.from.clone());
        }
    }
    let resolve = |target: &[String]| -> String {
        (0..=target.len())
            .rev()
            .map(|n| target[..n].join("::"))
            .find(|m| modules.contains(m))
            .unwrap_or_default()
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module, uses) in &parsed {
        if test_files.contains(module) {
            continue;
        }
        if !module.is_empty() && floor_of(module).is_none() {
            problems.push(format!(
                "{path}: module `{module}` has no floor: place it in FLOORS (tests/floors.rs) and docs/architecture.md"
            ));
            continue;
        }
        for u in uses {
            let to = resolve(&u.target);
            if to.is_empty() || to == u.from {
                continue;
            }
            let (Some(a), Some(b)) = (floor_of(&u.from), floor_of(&to)) else {
                if floor_of(&to).is_none() {
                    problems.push(format!(
                        "{path}:{}: `{}` imports {}, which has no floor",
                        u.line,
                        u.from,
                        describe(&to)
                    ));
                }
                continue;
            };
            if b > a {
                problems.push(format!(
                    "{path}:{}: {} imports {} (`crate::{}`): upward import",
                    u.line,
                    describe(&u.from),
                    describe(&to),
                    u.target.join("::")
                ));
            } else if a == b && !related(&u.from, &to) {
                edges.entry(u.from.clone()).or_default().insert(to);
            }
        }
    }
    let mut known: Vec<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    for cycle in cycles(&edges) {
        if let Some(k) = known.iter().position(|k| *k == cycle) {
            known.remove(k);
            continue;
        }
        problems.push(format!(
            "import cycle between modules of one floor: {}",
            cycle.join(" <-> ")
        ));
    }
    if files.iter().any(|(p, _)| p == "src/lib.rs") {
        for k in known {
            problems.push(format!(
                "KNOWN_CYCLES lists {} but it is gone: take it off the list",
                k.join(" <-> ")
            ));
        }
    }
    problems
}

/// A module and its ancestor or descendant (a parent names its children, children use their
/// parent's items): not counted as a cycle.
fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with("::"));
    under(a, b) || under(b, a)
}

/// Strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct St<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_imports_only_from_its_floor_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    paths.sort();
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    assert!(files.len() > 50, "read {} files", files.len());
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "{} floor problem(s) (see docs/architecture.md):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn synthetic(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    check(&files)
}

#[test]
fn a_deliberate_upward_import_is_reported_with_file_line_modules_and_floors() {
    let p = synthetic(&[
        ("src/server.rs", "pub struct WebLimits;\n"),
        (
            "src/config/mod.rs",
            "//! Config.\n\npub mod web;\nuse std::time::Duration;\nuse crate::server::WebLimits;\n",
        ),
        ("src/config/web.rs", "pub struct X;\n"),
    ]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0],
        "src/config/mod.rs:5: `config` (floor 1 vocabulary) imports `server` (floor 6 outputs) (`crate::server::WebLimits`): upward import"
    );
}

#[test]
fn groups_super_climbs_and_macro_paths_are_read_and_comments_strings_and_tests_are_not() {
    let p = synthetic(&[
        ("src/snapshot.rs", "pub struct Store;\n"),
        ("src/status/mod.rs", "pub struct About;\n"),
        (
            "src/findings/mod.rs",
            "pub mod codes;\npub mod state;\n#[cfg(test)]\npub(crate) mod example;\n",
        ),
        ("src/findings/state.rs", "pub struct View;\n"),
        // A test-only file (declared `#[cfg(test)] pub(crate) mod`) is not read.
        ("src/findings/example.rs", "use crate::run::go;\n"),
        // `super::super` from findings::codes climbs to the root: `crate::snapshot`.
        (
            "src/findings/codes.rs",
            "pub fn f() { let _ = super::super::snapshot::Store; }\n",
        ),
        (
            "src/pg/mod.rs",
            "use crate::{dsn, status::{self, About}};\n\
             /// [`crate::run`] in a doc comment\n\
             // crate::run in a comment\n\
             /* crate::run */\n\
             const S: &str = \"crate::run::x\";\n\
             const R: &str = r#\"crate::run\"#;\n\
             fn lt<'a>(c: char) -> bool { c == '\\'' }\n\
             #[cfg(test)]\nmod tests { use crate::run::X; }\n\
             macro_rules! m { () => { $crate::run::go() } }\n",
        ),
        ("src/dsn.rs", ""),
        ("src/run.rs", "pub fn go() {}\n"),
    ]);
    let want = [
        "src/findings/codes.rs:1: `findings::codes` (floor 1 vocabulary) imports `snapshot`",
        "src/pg/mod.rs:1: `pg` (floor 2 drivers) imports `status` (floor 6 outputs) (`crate::status`)",
        "src/pg/mod.rs:1: `pg` (floor 2 drivers) imports `status` (floor 6 outputs) (`crate::status::About`)",
        "src/pg/mod.rs:10: `pg` (floor 2 drivers) imports `run` (floor 7 runtime) (`crate::run::go`)",
    ];
    assert_eq!(p.len(), want.len(), "{p:#?}");
    for (got, want) in p.iter().zip(want) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn a_module_without_a_floor_and_a_same_floor_cycle_are_reported() {
    let p = synthetic(&[
        ("src/gadget.rs", "use crate::dsn::Dsn;\n"),
        ("src/dsn.rs", "pub struct Dsn;\n"),
        ("src/render.rs", "use crate::alerting::A;\n"),
        ("src/alerting.rs", "use crate::render::R;\n"),
        // A parent and its child naming each other is no cycle.
        (
            "src/check/mod.rs",
            "pub trait Check {}\nuse crate::check::host::H;\n",
        ),
        ("src/check/host.rs", "use super::Check;\n"),
    ]);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("src/gadget.rs: module `gadget` has no floor"),
        "{}",
        p[0]
    );
    assert_eq!(
        p[1],
        "import cycle between modules of one floor: alerting <-> render"
    );
}
