//! The product's top-level modules import each other without cycles: each module sits above or
//! below another, never both, so a newcomer can read them bottom-up and a change to one cannot
//! come back round to it. Reads every `src/**/*.rs` of the product crate (not `src/main.rs` and
//! `src/bin/`, which are binaries over the library), collects the `crate::X` paths (and `super::`
//! paths that climb to the crate root) per top-level module, and fails naming each cycle with the
//! lines that make it. Comments and string literals are skipped, so a doc that mentions
//! `crate::X` is no import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One reference from a file of module `from` to top-level module `to`.
#[derive(Debug, Clone)]
struct Use {
    to: String,
    file: PathBuf,
    line: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's module path below the crate root: `src/dockerd/plan.rs` is `[dockerd, plan]`,
/// `src/dockerd/mod.rs` is `[dockerd]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a Rust file with comments, string and char literals blanked out (newlines kept, so
/// line numbers stay right).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            for &ch in &c[i..(j + 1).min(c.len())] {
                out.push(blank(ch));
            }
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{7f}') or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for _ in i..=e {
                        out.push(' ');
                    }
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_at(code: &[char], mut i: usize) -> (String, usize) {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    while i < code.len() && (code[i].is_alphanumeric() || code[i] == '_') {
        i += 1;
    }
    (code[start..i].iter().collect(), i)
}

/// The top-level modules a path's first segment after `crate::` names; for a group
/// (`crate::{a, b::c}`), each item's first segment.
fn targets_after(code: &[char], i: usize) -> Vec<String> {
    let mut j = i;
    while j < code.len() && code[j].is_whitespace() {
        j += 1;
    }
    if code.get(j) != Some(&'{') {
        let (name, _) = ident_at(code, j);
        return vec![name];
    }
    // A group: the first identifier of each item at depth one.
    let mut names = Vec::new();
    let mut depth = 0;
    let mut expect_item = true;
    while j < code.len() {
        match code[j] {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_item = true;
                }
                j += 1;
            }
            '}' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                expect_item = true;
                j += 1;
            }
            ch if depth == 1 && expect_item && (ch.is_alphanumeric() || ch == '_') => {
                let (name, end) = ident_at(code, j);
                names.push(name);
                expect_item = false;
                j = end;
            }
            _ => j += 1,
        }
    }
    names
}

fn is_ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Every reference of one file to a top-level module, by the module it names.
fn uses_in(file: &Path, module: &[String]) -> Vec<Use> {
    let text = std::fs::read_to_string(file).unwrap();
    let code: Vec<char> = code_only(&text).chars().collect();
    let line_of = |i: usize| code[..i].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) open at a brace depth: `super::` inside one climbs to
    // the file's module first.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < code.len() {
        let at_word = i == 0 || !is_ident_char(code[i - 1]);
        if code[i] == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if code[i] == '}' {
            depth = depth.saturating_sub(1);
            while inline.last().is_some_and(|&d| d > depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if at_word && code[i..].starts_with(&['m', 'o', 'd']) && code.get(i + 3) == Some(&' ') {
            let (_, end) = ident_at(&code, i + 3);
            let mut k = end;
            while k < code.len() && code[k].is_whitespace() {
                k += 1;
            }
            if code.get(k) == Some(&'{') {
                inline.push(depth + 1);
            }
            i = end;
            continue;
        }
        let crate_path = ['c', 'r', 'a', 't', 'e', ':', ':'];
        if at_word && code[i..].starts_with(&crate_path) {
            for to in targets_after(&code, i + crate_path.len()) {
                found.push(Use {
                    to,
                    file: file.to_path_buf(),
                    line: line_of(i),
                });
            }
            i += crate_path.len();
            continue;
        }
        let super_path = ['s', 'u', 'p', 'e', 'r', ':', ':'];
        if at_word && code[i..].starts_with(&super_path) {
            let start = i;
            let mut climbs = 0;
            while code[i..].starts_with(&super_path) {
                climbs += 1;
                i += super_path.len();
            }
            // From a module at depth d (file modules plus inline ones), d climbs reach the root.
            if climbs >= module.len() + inline.len() {
                for to in targets_after(&code, i) {
                    found.push(Use {
                        to,
                        file: file.to_path_buf(),
                        line: line_of(start),
                    });
                }
            }
            continue;
        }
        i += 1;
    }
    found
}

/// Top-level module -> the top-level modules it uses, with where.
fn graph() -> BTreeMap<String, BTreeMap<String, Vec<Use>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .filter(|m| m != "lib" && m != "main" && m != "bin")
        .collect();
    let mut g: BTreeMap<String, BTreeMap<String, Vec<Use>>> = BTreeMap::new();
    for m in &modules {
        g.entry(m.clone()).or_default();
    }
    for file in &files {
        let path = module_path(&src, file);
        let Some(top) = path.first() else { continue };
        if !modules.contains(top) {
            continue;
        }
        for u in uses_in(file, &path) {
            if &u.to != top && modules.contains(&u.to) {
                g.get_mut(top)
                    .unwrap()
                    .entry(u.to.clone())
                    .or_default()
                    .push(u);
            }
        }
    }
    g
}

/// Strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(g: &BTreeMap<String, BTreeMap<String, Vec<Use>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeMap<String, Vec<Use>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g[v].keys() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// One cycle through `start` inside its component, as a path `start -> … -> start`.
fn cycle_through(
    g: &BTreeMap<String, BTreeMap<String, Vec<Use>>>,
    component: &[String],
    start: &str,
) -> Vec<String> {
    // Breadth-first from start until an edge leads back to it, staying inside the component.
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in g[v].keys().filter(|w| component.contains(w)) {
            if w == start {
                let mut path = vec![v.to_string()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.to_string());
                }
                path.reverse();
                path.push(start.to_string());
                return path;
            }
            if !prev.contains_key(w.as_str()) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each member")
}

fn describe(g: &BTreeMap<String, BTreeMap<String, Vec<Use>>>, component: &[String]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = cycle_through(g, component, &component[0]);
    let mut s = format!("import cycle: {}\n", path.join(" -> "));
    for pair in path.windows(2) {
        let uses = &g[&pair[0]][&pair[1]];
        s.push_str(&format!("  {} -> {}:\n", pair[0], pair[1]));
        for u in uses.iter().take(5) {
            s.push_str(&format!(
                "    {}:{} uses crate::{}\n",
                u.file.strip_prefix(root).unwrap_or(&u.file).display(),
                u.line,
                u.to
            ));
        }
        if uses.len() > 5 {
            s.push_str(&format!("    … and {} more\n", uses.len() - 5));
        }
    }
    if component.len() > path.len() - 1 {
        s.push_str(&format!(
            "  (all of {} reach each other)\n",
            component.join(", ")
        ));
    }
    s
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let g = graph();
    let found = cycles(&g);
    if !found.is_empty() {
        let text: Vec<String> = found.iter().map(|c| describe(&g, c)).collect();
        panic!(
            "the product's top-level modules must form no import cycle; found {}:\n{}",
            found.len(),
            text.join("\n")
        );
    }
}

/// The graph itself, printed with `--nocapture`: who imports whom, bottom-up.
#[test]
fn the_module_graph_is_printed_for_review() {
    let g = graph();
    let mut lines = Vec::new();
    for (m, uses) in &g {
        let to: Vec<&str> = uses.keys().map(String::as_str).collect();
        lines.push(format!("{m} -> {}", to.join(", ")));
    }
    println!("{}", lines.join("\n"));
    assert!(g.contains_key("config"), "the scan finds the modules");
}

/// The scanner itself: a group import counts each item, a comment or a string does not, and
/// `super::` counts only when it climbs to the crate root.
#[test]
fn the_scanner_reads_groups_and_skips_comments_strings_and_inner_supers() {
    let dir = std::env::temp_dir().join(format!("structure-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.rs");
    std::fs::write(
        &file,
        "//! mentions crate::alpha in a doc\n\
         use crate::{beta, gamma::Thing};\n\
         const S: &str = \"crate::delta\";\n\
         const R: &str = r#\"crate::epsilon\"#;\n\
         fn f() -> char { '{' }\n\
         mod tests { use super::zeta; }\n\
         use super::eta;\n",
    )
    .unwrap();
    let found: Vec<String> = uses_in(&file, &["x".to_string()])
        .into_iter()
        .map(|u| u.to)
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["beta", "gamma", "eta"]);
}
