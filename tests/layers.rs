//! The module tree has no import cycle, and the top-level modules keep their layer order.
//!
//! Every file of the library (and of the binary) is read from `src/`, following its `mod`
//! declarations from the crate root; `#[cfg(test)]` items (test modules, test-only imports) are
//! left out. Each `crate::…`, `super::…` and `self::…` path, `use` groups included, is mapped to
//! the deepest module it names, which gives an edge from the module it is written in. Edges
//! between a module and its own ancestors or descendants are ignored (a parent declares and
//! re-exports its children, a child reads its parent's items): the checks are about modules
//! that sit side by side.
//!
//! - No cycle among modules.
//! - No cycle among the children of any one module, every edge counted at the level where its
//!   two ends part (`a::x → b::y` counts as `a → b`, `a::x → a::z::w` as `a::x → a::z`): this
//!   is what makes the tree readable from a bottom layer up.
//! - The top-level modules import only modules of lower layers ([`LAYERS`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The top-level modules of the library from the bottom layer up. A module may import modules
/// of lower layers only; modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    // Dates, for every module that writes one; closed label sets (audit fields, metrics).
    &["time", "label"],
    // Leaves: where an address is and the wire formats read from peers (both pure), destinations
    // and their resolution, how a request fails.
    &["jurisdiction", "wire", "destination", "error"],
    // Pure policy; certificates; the hash chain, keys and verification of the audit trail.
    &["policy", "tls", "evidence"],
    // The audit trail; the compiled configuration.
    &["audit", "config"],
    // Prometheus metrics, counted from audit records; the residency report, read from them.
    &["metrics", "report"],
    // HTTP bodies, headers and responses; a client connection with timed I/O.
    &["http", "conn"],
    // Connecting to destinations and pools.
    &["upstream"],
    // What a request reads: the snapshot.
    &["state"],
    // The life of a request.
    &["pipeline"],
    // Accepting connections, one file per listener kind.
    &["listen"],
    // Start-up, shutdown, the running proxy.
    &["server"],
    // Work on a running proxy: configuration reload, the cloud-range refresh.
    &["reload", "refresh"],
    // The admin listener: metrics, health, reload and explain over HTTP.
    &["admin"],
];

/// A module path inside its crate (`[]` is the crate root).
type ModPath = Vec<String>;

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Tokens with their line numbers, comments, string and character literals removed.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // Skip a quoted string from its opening quote at `i`; returns the index after it.
    let skip_string = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
            }
            if i < b.len() && b[i] == b'\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == b'"' {
            i = skip_string(i, &mut line);
        } else if (c == b'r' || c == b'b')
            && (b[i..].starts_with(b"r#\"")
                || b[i..].starts_with(b"r\"")
                || b[i..].starts_with(b"br\"")
                || b[i..].starts_with(b"br#"))
        {
            // Raw string: r#"…"# with any number of hashes.
            let mut j = i + if c == b'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                if b[j] == b'\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j + close.len();
        } else if c == b'b' && b.get(i + 1) == Some(&b'"') {
            i = skip_string(i + 1, &mut line);
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                // Past the backslash and the escaped character (which may be a quote).
                let mut j = i + 3;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                // A lifetime, or a multi-byte character literal.
                let rest = &src[i + 1..];
                match rest.chars().next() {
                    Some(ch) if !ch.is_ascii() && rest[ch.len_utf8()..].starts_with('\'') => {
                        i += 1 + ch.len_utf8() + 1;
                    }
                    _ => i += 1,
                }
            }
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_owned()), line));
        } else if c.is_ascii_digit() {
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
        } else if b[i..].starts_with(b"::") {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            // Multi-byte characters outside literals are not Rust syntax; skip them whole.
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push((Tok::Punct(ch), line));
            i += ch.len_utf8().max(1);
        }
    }
    out
}

fn is_ident(t: Option<&(Tok, usize)>, name: &str) -> bool {
    matches!(t, Some((Tok::Ident(s), _)) if s == name)
}

fn is_punct(t: Option<&(Tok, usize)>, c: char) -> bool {
    matches!(t, Some((Tok::Punct(p), _)) if *p == c)
}

/// Index after the bracketed group opening at `i` (`(`, `[` or `{`).
fn skip_group(t: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match &t[i].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index after the item starting at `i`: through its `;` or its closing brace.
fn skip_item(t: &[(Tok, usize)], mut i: usize) -> usize {
    while i < t.len() {
        match &t[i].0 {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return skip_group(t, i),
            Tok::Punct('(' | '[') => i = skip_group(t, i),
            _ => i += 1,
        }
    }
    i
}

/// The expansion of the use tree (or plain path) starting at `i`, each appended to `prefix`;
/// returns the index after it.
fn use_tree(
    t: &[(Tok, usize)],
    mut i: usize,
    mut prefix: ModPath,
    out: &mut Vec<ModPath>,
) -> usize {
    loop {
        match t.get(i).map(|(tok, _)| tok) {
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match t.get(i).map(|(tok, _)| tok) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => i = use_tree(t, i, prefix.clone(), out),
                    }
                }
            }
            Some(Tok::Ident(s)) if s == "self" => {
                out.push(prefix);
                return i + 1;
            }
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if matches!(t.get(i), Some((Tok::PathSep, _))) {
                    i += 1;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// One path written in a module: where, and what it names.
#[derive(Debug, Clone)]
struct Use {
    file: PathBuf,
    line: usize,
    path: ModPath,
}

#[derive(Debug, Default)]
struct Crate {
    /// Every module.
    modules: BTreeSet<ModPath>,
    /// The paths written in each module.
    uses: BTreeMap<ModPath, Vec<Use>>,
}

/// Where `mod name;` declared in `file` lives.
fn child_file(files: &BTreeMap<PathBuf, String>, file: &Path, name: &str) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_str()?;
    let dir = file.parent()?;
    let base = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| files.contains_key(p))
}

/// Reads the module body `t[i..end]` of module `m`, written in `file`.
fn read_body(
    files: &BTreeMap<PathBuf, String>,
    krate: &mut Crate,
    file: &Path,
    m: &ModPath,
    t: &[(Tok, usize)],
    mut i: usize,
    end: usize,
) {
    krate.modules.insert(m.clone());
    let mut uses = Vec::new();
    while i < end {
        // `#[cfg(test)]` on the next item: leave the item out.
        if is_punct(t.get(i), '#')
            && is_punct(t.get(i + 1), '[')
            && is_ident(t.get(i + 2), "cfg")
            && is_punct(t.get(i + 3), '(')
            && is_ident(t.get(i + 4), "test")
            && is_punct(t.get(i + 5), ')')
            && is_punct(t.get(i + 6), ']')
        {
            i += 7;
            while is_punct(t.get(i), '#') {
                i = skip_group(t, i + 1);
            }
            i = skip_item(t, i);
            continue;
        }
        // `mod name;` or `mod name { … }`.
        if is_ident(t.get(i), "mod")
            && let Some((Tok::Ident(name), _)) = t.get(i + 1)
        {
            let mut child = m.clone();
            child.push(name.clone());
            if is_punct(t.get(i + 2), ';') {
                if let Some(path) = child_file(files, file, name) {
                    read_file(files, krate, &path, &child);
                }
                i += 3;
                continue;
            }
            if is_punct(t.get(i + 2), '{') {
                let close = skip_group(t, i + 2);
                read_body(files, krate, file, &child, t, i + 3, close - 1);
                i = close;
                continue;
            }
        }
        let after_sep = matches!(t.get(i.wrapping_sub(1)), Some((Tok::PathSep, _)))
            || is_punct(t.get(i.wrapping_sub(1)), '$');
        if let Some((Tok::Ident(root), line)) = t.get(i)
            && !after_sep
            && matches!(t.get(i + 1), Some((Tok::PathSep, _)))
        {
            let base = match root.as_str() {
                "crate" => Some((Vec::new(), i + 2)),
                "self" => Some((m.clone(), i + 2)),
                "super" => {
                    let mut base = m.clone();
                    let mut j = i;
                    while is_ident(t.get(j), "super")
                        && matches!(t.get(j + 1), Some((Tok::PathSep, _)))
                    {
                        base.pop();
                        j += 2;
                    }
                    Some((base, j))
                }
                _ => None,
            };
            if let Some((base, j)) = base {
                let mut paths = Vec::new();
                i = use_tree(t, j, base, &mut paths);
                uses.extend(paths.into_iter().map(|path| Use {
                    file: file.to_path_buf(),
                    line: *line,
                    path,
                }));
                continue;
            }
        }
        i += 1;
    }
    krate.uses.entry(m.clone()).or_default().extend(uses);
}

fn read_file(files: &BTreeMap<PathBuf, String>, krate: &mut Crate, file: &Path, m: &ModPath) {
    let Some(src) = files.get(file) else {
        return;
    };
    let t = tokenize(src);
    read_body(files, krate, file, m, &t, 0, t.len());
}

fn read_crate(files: &BTreeMap<PathBuf, String>, root: &Path) -> Crate {
    let mut krate = Crate::default();
    read_file(files, &mut krate, root, &Vec::new());
    krate
}

/// Edges between modules, each with the paths that make it.
type Graph = BTreeMap<ModPath, BTreeMap<ModPath, Vec<Use>>>;

/// The deepest module `path` names.
fn module_of<'a>(krate: &'a Crate, path: &[String]) -> &'a ModPath {
    (0..=path.len())
        .rev()
        .find_map(|n| krate.modules.get(&path[..n]))
        .unwrap_or_else(|| panic!("the crate root is a module"))
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Module → module edges, leaving out a module's edges to itself, its ancestors and its
/// descendants.
fn module_graph(krate: &Crate) -> Graph {
    let mut g = Graph::new();
    for (from, uses) in &krate.uses {
        for u in uses {
            let to = module_of(krate, &u.path);
            if !related(from, to) {
                g.entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_default()
                    .push(u.clone());
            }
        }
    }
    g
}

/// Every edge lifted to the level where its ends part: `a::x::y → a::z` becomes `a::x → a::z`.
fn sibling_graph(g: &Graph) -> Graph {
    let mut s = Graph::new();
    for (from, tos) in g {
        for (to, uses) in tos {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            s.entry(from[..=common].to_vec())
                .or_default()
                .entry(to[..=common].to_vec())
                .or_default()
                .extend(uses.iter().cloned());
        }
    }
    s
}

/// A cycle of `g`, if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        n: &ModPath,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == n).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for next in g.get(n).into_iter().flat_map(BTreeMap::keys) {
            if let Some(c) = visit(g, next, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    let mut stack = Vec::new();
    g.keys().find_map(|n| visit(g, n, &mut marks, &mut stack))
}

fn describe_cycle(g: &Graph, cycle: &[ModPath]) -> String {
    let names: Vec<String> = cycle.iter().map(|m| show(m)).collect();
    let mut s = format!("import cycle: {}\n", names.join(" -> "));
    for w in cycle.windows(2) {
        let _ = writeln!(s, "  {} -> {}:", show(&w[0]), show(&w[1]));
        for u in g[&w[0]][&w[1]].iter().take(3) {
            let _ = writeln!(s, "    {}:{}: {}", u.file.display(), u.line, show(&u.path));
        }
    }
    s
}

/// Problems found in the crate rooted at `root`: cycles, and top-level imports against
/// `layers` (bottom first; an empty list checks no layers).
fn check(files: &BTreeMap<PathBuf, String>, root: &Path, layers: &[&[&str]]) -> Vec<String> {
    let krate = read_crate(files, root);
    let g = module_graph(&krate);
    let mut problems = Vec::new();
    if let Some(c) = find_cycle(&g) {
        problems.push(describe_cycle(&g, &c));
    }
    let s = sibling_graph(&g);
    if let Some(c) = find_cycle(&s) {
        problems.push(format!("between siblings: {}", describe_cycle(&s, &c)));
    }
    if layers.is_empty() {
        return problems;
    }
    let layer_of = |name: &str| layers.iter().position(|l| l.contains(&name));
    for top in krate.modules.iter().filter(|m| m.len() == 1) {
        if layer_of(&top[0]).is_none() {
            problems.push(format!("top-level module {} is in no layer", show(top)));
        }
    }
    for (from, tos) in &s {
        for (to, uses) in tos {
            let (Some(lf), Some(lt)) = (layer_of(&from[0]), layer_of(&to[0])) else {
                continue;
            };
            if from.len() == 1 && lt >= lf {
                let u = &uses[0];
                problems.push(format!(
                    "{} (layer {lf}) imports {} (layer {lt}), which is not below it: {}:{}: {}",
                    show(from),
                    show(to),
                    u.file.display(),
                    u.line,
                    show(&u.path)
                ));
            }
        }
    }
    problems
}

/// Every `.rs` file under `base/dir`, by its path relative to `base`.
fn read_tree(base: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
    let full = base.join(dir);
    let entries = std::fs::read_dir(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    for entry in entries {
        let name = entry.expect("directory entry").file_name();
        let rel = dir.join(&name);
        let path = base.join(&rel);
        if path.is_dir() {
            read_tree(base, &rel, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.insert(rel, text);
        }
    }
}

/// The crate's source files, by path from the crate root (`src/…`).
fn src_files() -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    read_tree(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        Path::new("src"),
        &mut files,
    );
    files
}

#[test]
fn the_library_has_no_import_cycle_and_keeps_its_layers() {
    let files = src_files();
    let krate = read_crate(&files, Path::new("src/lib.rs"));
    assert!(
        krate.modules.len() > 40,
        "the module tree was read ({} modules)",
        krate.modules.len()
    );
    let problems = check(&files, Path::new("src/lib.rs"), LAYERS);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_binary_has_no_import_cycle() {
    let files = src_files();
    let krate = read_crate(&files, Path::new("src/main.rs"));
    assert!(krate.modules.len() > 1, "the binary's modules were read");
    let problems = check(&files, Path::new("src/main.rs"), &[]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_named_layer_rules_hold() {
    let files = src_files();
    let krate = read_crate(&files, Path::new("src/lib.rs"));
    let s = sibling_graph(&module_graph(&krate));
    let imports = |m: &str| -> BTreeSet<String> {
        s.get(&vec![m.to_owned()])
            .into_iter()
            .flat_map(BTreeMap::keys)
            .map(|to| show(to))
            .collect()
    };
    let time = BTreeSet::from(["time".to_owned()]);
    assert!(imports("jurisdiction").is_subset(&time), "jurisdiction");
    assert_eq!(imports("wire"), BTreeSet::new(), "wire");
    assert_eq!(imports("time"), BTreeSet::new(), "time");
    assert_eq!(imports("label"), BTreeSet::new(), "label");
    let policy = imports("policy");
    assert!(
        policy.iter().all(|m| m == "jurisdiction" || m == "label"),
        "policy imports {policy:?}"
    );
    for (m, above) in [
        ("pipeline", ["listen", "server"].as_slice()),
        ("listen", &["server"]),
    ] {
        let got = imports(m);
        for a in above {
            assert!(!got.contains(*a), "{m} imports {a}");
        }
    }
}

/// A small crate, written as files, to check the checker itself.
fn fixture(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from("src").join(p), (*t).to_owned()))
        .collect()
}

#[test]
fn the_check_finds_a_cycle_through_use_groups_super_and_nested_modules() {
    let files = fixture(&[
        ("lib.rs", "pub mod low;\npub mod mid;\npub mod top;\n"),
        (
            "low.rs",
            "pub mod a;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nuse crate::top::T;\n",
        ),
        // Only a test module reaches up: no cycle.
        ("low/tests.rs", "use crate::top::T;\n"),
        (
            "low/a.rs",
            "use super::super::mid::M; // crate::top::X in a comment\n",
        ),
        // Paths in literals are not imports; quotes in character literals open no string.
        (
            "mid.rs",
            r##"pub struct M;
const S: &str = "crate::top::Y";
const Q: char = '"';
const R: char = '\'';
fn id<'a>(x: &'a str) -> &'a str { x }
const RAW: &str = r#"crate::top "q""#;
"##,
        ),
        (
            "top.rs",
            "use crate::{low::{self, a}, mid};\nfn f() { let _ = self::g; }\n",
        ),
    ]);
    let root = Path::new("src/lib.rs");
    let layers: &[&[&str]] = &[&["mid"], &["low"], &["top"]];
    assert_eq!(check(&files, root, layers), Vec::<String>::new());

    let krate = read_crate(&files, root);
    let g = module_graph(&krate);
    let edges: Vec<(String, String)> = g
        .iter()
        .flat_map(|(f, tos)| tos.keys().map(move |t| (show(f), show(t))))
        .collect();
    let want = [
        ("low::a", "mid"),
        ("top", "low"),
        ("top", "low::a"),
        ("top", "mid"),
    ];
    assert_eq!(
        edges,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );

    // mid -> top closes a cycle, and an inner module of mid reaching low breaks the layers.
    let mut cyclic = files.clone();
    cyclic.insert(
        PathBuf::from("src/mid.rs"),
        "pub struct M;\nuse crate::top::f;\npub mod inner {\n    use super::super::low;\n}\n"
            .to_owned(),
    );
    let problems = check(&cyclic, root, layers);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems[0].starts_with("import cycle: low::a -> mid -> top -> low::a\n"),
        "{}",
        problems[0]
    );
    assert!(
        problems[0].contains("src/mid.rs:2: top::f"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("between siblings: import cycle: "),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("mid (layer 0) imports low (layer 1)"),
        "{}",
        problems[2]
    );
    assert!(problems[2].contains("src/mid.rs:4: low"), "{}", problems[2]);
    assert!(
        problems[3].starts_with("mid (layer 0) imports top (layer 2)"),
        "{}",
        problems[3]
    );
}
