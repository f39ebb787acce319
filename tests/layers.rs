//! Keeps the crate's layers: reads every module-to-module edge out of `src/` and fails on
//! one that points up the declared order, or on a cycle between files of one module.
//!
//! An edge is any path that names a module of this crate: `use crate::…`, `use super::…`,
//! `use self::…`, a use of a child module by name, and `crate::…`/`super::…`/`self::…`
//! paths in code (`playstate::…` in main.rs). Each is resolved to the file that defines
//! what it names, following the `use` re-exports of a `mod.rs` (so `crate::cluster::ShardId`
//! is an edge to the file that defines `ShardId`, not to `cluster/mod.rs`). Comments,
//! string literals and items under `#[cfg(test)]` are not code the service runs, so they are
//! skipped; a module using its own submodules is how it declares them, so that is no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, lowest layer first. A module may use modules of lower
/// layers only: not its own layer's, not a higher one's. The README's Architecture section
/// and src/lib.rs state the same order.
const LAYERS: &[&[&str]] = &[
    &["domain", "error_chain"],
    &["clock", "retry", "config", "telemetry"],
    &["aws", "catalog", "store", "events", "worker"],
    &["trailers"],
    &["cluster"],
    &["actors"],
    &["users"],
    &["api", "admin"],
    &["logging"],
    &["server"],
    &["main"],
];

#[test]
fn every_edge_between_top_level_modules_points_down_the_layers() {
    let graph = ModuleGraph::read(&src_dir());
    let problems = layer_violations(&graph.edges, LAYERS);
    assert!(problems.is_empty(), "{}", report(&problems));
}

#[test]
fn the_files_of_a_module_use_each_other_without_a_cycle() {
    let graph = ModuleGraph::read(&src_dir());
    let problems = cycles(&graph.edges);
    assert!(problems.is_empty(), "{}", report(&problems));
}

#[test]
fn the_check_reads_the_edges_the_crate_is_known_to_have() {
    // A parser that saw nothing would pass both checks.
    let graph = ModuleGraph::read(&src_dir());
    let has = |from: &str, to: &str| {
        graph
            .edges
            .iter()
            .any(|e| e.from.name() == from && e.to.name() == to)
    };
    assert!(has("server", "api"), "server uses api");
    assert!(has("main", "server"), "main.rs uses playstate::server");
    assert!(
        graph.edges.len() > 100,
        "only {} edges read",
        graph.edges.len()
    );
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn report(problems: &[String]) -> String {
    let mut text = format!("{} problem(s) with the module layers:\n", problems.len());
    for problem in problems {
        let _ = writeln!(text, "  {problem}");
    }
    text
}

/// A file-level module: `["cluster", "router"]` for src/cluster/router.rs; src/main.rs is
/// `["main"]`, a module of its own above the library.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Module(Vec<String>);

impl Module {
    fn top(&self) -> &str {
        &self.0[0]
    }

    fn name(&self) -> String {
        self.0.join("::")
    }

    fn is_ancestor_of(&self, other: &Module) -> bool {
        other.0.len() > self.0.len() && other.0.starts_with(&self.0)
    }
}

#[derive(Clone, Debug)]
struct Edge {
    from: Module,
    to: Module,
    /// Where the edge is written: `src/config.rs:428`.
    at: String,
}

struct ModuleGraph {
    edges: Vec<Edge>,
}

impl ModuleGraph {
    fn read(src: &Path) -> ModuleGraph {
        let mut files = Vec::new();
        collect_rs_files(src, &mut files);
        let sources: Vec<(String, Module, String)> = files
            .iter()
            .filter_map(|path| {
                let relative = path.strip_prefix(src).expect("under src");
                let module = module_of(relative)?;
                let text = std::fs::read_to_string(path).expect("readable source");
                Some((format!("src/{}", relative.display()), module, text))
            })
            .collect();
        let inputs: Vec<(&str, &Module, &str)> = sources
            .iter()
            .map(|(name, module, text)| (name.as_str(), module, text.as_str()))
            .collect();
        ModuleGraph {
            edges: edges_of(&inputs),
        }
    }
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable src dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// lib.rs is the crate root, no module of its own (it only declares the top level).
fn module_of(relative: &Path) -> Option<Module> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    match file.as_str() {
        "lib.rs" if parts.is_empty() => return None,
        "main.rs" if parts.is_empty() => parts.push("main".to_owned()),
        "mod.rs" => {}
        _ => parts.push(file.trim_end_matches(".rs").to_owned()),
    }
    Some(Module(parts))
}

/// Every edge between different file-level modules, from `(file name, module, source)`.
fn edges_of(sources: &[(&str, &Module, &str)]) -> Vec<Edge> {
    let known: BTreeSet<Vec<String>> = sources.iter().map(|(_, m, _)| m.0.clone()).collect();
    let parsed: Vec<ParsedFile> = sources
        .iter()
        .map(|(name, module, text)| parse_file(name, module, text, &known))
        .collect();
    // What each file's top-level `use`s bind, so a path through a re-export reaches the
    // file that defines the item.
    let bindings: BTreeMap<&Vec<String>, &BTreeMap<String, Vec<String>>> = parsed
        .iter()
        .map(|file| (&file.module.0, &file.bindings))
        .collect();
    let mut edges = Vec::new();
    for file in &parsed {
        for (line, path) in &file.paths {
            let Some(to) = resolve(path, &known, &bindings) else {
                continue;
            };
            if to == file.module || file.module.is_ancestor_of(&to) {
                continue;
            }
            edges.push(Edge {
                from: file.module.clone(),
                to,
                at: format!("{}:{line}", file.name),
            });
        }
    }
    edges
}

/// The file-level module that an absolute path (segments from the crate root) names.
fn resolve(
    path: &[String],
    known: &BTreeSet<Vec<String>>,
    bindings: &BTreeMap<&Vec<String>, &BTreeMap<String, Vec<String>>>,
) -> Option<Module> {
    let mut path = path.to_vec();
    // A re-export chain is short; the bound stops a `use` that names itself.
    for _ in 0..16 {
        let prefix_len = (1..=path.len())
            .rev()
            .find(|&n| known.contains(&path[..n]))?;
        let file = path[..prefix_len].to_vec();
        let through = path
            .get(prefix_len)
            .and_then(|name| bindings.get(&file).and_then(|b| b.get(name)));
        match through {
            Some(target) if target.as_slice() != path.as_slice() => {
                let mut next = target.clone();
                next.extend_from_slice(&path[prefix_len + 1..]);
                path = next;
            }
            _ => return Some(Module(file)),
        }
    }
    None
}

struct ParsedFile {
    name: String,
    module: Module,
    /// Absolute paths (from the crate root) named in the file, with their line.
    paths: Vec<(usize, Vec<String>)>,
    /// What the file's module-level `use`s bind: name → absolute path.
    bindings: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

fn parse_file(
    name: &str,
    module: &Module,
    text: &str,
    known: &BTreeSet<Vec<String>>,
) -> ParsedFile {
    let tokens = tokenize(&strip_comments_and_literals(text));
    let tokens = drop_cfg_test_items(&tokens);
    let is_main = module.0 == ["main"];
    let mut parsed = ParsedFile {
        name: name.to_owned(),
        module: module.clone(),
        paths: Vec::new(),
        bindings: BTreeMap::new(),
    };
    // Inline `mod name { … }` blocks: their name and the brace depth inside them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        let current: Vec<String> = if is_main {
            Vec::new()
        } else {
            module
                .0
                .iter()
                .cloned()
                .chain(inline.iter().map(|(n, _)| n.clone()))
                .collect()
        };
        match token {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some((_, Token::Ident(inner))), Some((_, Token::Punct('{')))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((inner.clone(), depth + 1));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word) if word == "use" => {
                let end = (i..tokens.len())
                    .find(|&j| tokens[j].1 == Token::Punct(';'))
                    .unwrap_or(tokens.len());
                // Only the file's own items are reachable as `path::to::file::Name`.
                let at_file_level = inline.is_empty() && depth == 0;
                for (path, binding) in use_tree(&tokens[i + 1..end]) {
                    let Some(absolute) = absolute(&path, &current, is_main, known, true) else {
                        continue;
                    };
                    if let Some(binding) = binding.filter(|_| at_file_level) {
                        parsed.bindings.insert(binding, absolute.clone());
                    }
                    parsed.paths.push((*line, absolute));
                }
                i = end;
                continue;
            }
            Token::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    || (is_main && word == "playstate") =>
            {
                let preceded_by_sep = i > 0 && tokens[i - 1].1 == Token::PathSep;
                if !preceded_by_sep && tokens.get(i + 1).map(|t| &t.1) == Some(&Token::PathSep) {
                    let mut path = vec![word.clone()];
                    let mut j = i + 1;
                    while let (Some((_, Token::PathSep)), Some((_, Token::Ident(next)))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        path.push(next.clone());
                        j += 2;
                    }
                    if let Some(absolute) = absolute(&path, &current, is_main, known, false) {
                        parsed.paths.push((*line, absolute));
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    parsed
}

/// Makes a path absolute from the crate root, or `None` for a path outside the crate.
fn absolute(
    path: &[String],
    current: &[String],
    is_main: bool,
    known: &BTreeSet<Vec<String>>,
    in_use: bool,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let (mut base, mut rest): (Vec<String>, &[String]) = match first.as_str() {
        "crate" if !is_main => (Vec::new(), &path[1..]),
        "playstate" if is_main => (Vec::new(), &path[1..]),
        "self" | "super" if !is_main => (current.to_vec(), path),
        // A `use` may start at a child module of the current one.
        _ if in_use && !is_main && {
            let mut child = current.to_vec();
            child.push(first.clone());
            known.contains(&child)
        } =>
        {
            (current.to_vec(), path)
        }
        _ => return None,
    };
    while let Some(step) = rest.first() {
        match step.as_str() {
            "self" => {}
            "super" => {
                base.pop()?;
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend_from_slice(rest);
    Some(base)
}

/// Expands a use tree (the tokens between `use` and `;`) into its paths, each with the name
/// it binds (`None` for a glob or `as _`).
fn use_tree(tokens: &[(usize, Token)]) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    expand(tokens, &mut i, Vec::new(), &mut out);
    out
}

fn expand(
    tokens: &[(usize, Token)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    while *i < tokens.len() {
        match &tokens[*i].1 {
            Token::Ident(word) if word == "as" => {
                let alias = match tokens.get(*i + 1) {
                    Some((_, Token::Ident(alias))) => Some(alias.clone()),
                    _ => None,
                };
                out.push((path.clone(), alias));
                *i += 2;
                return;
            }
            Token::Ident(word) => {
                path.push(word.clone());
                *i += 1;
            }
            Token::PathSep => *i += 1,
            Token::Punct('*') => {
                out.push((path.clone(), None));
                *i += 1;
                return;
            }
            Token::Punct('{') => {
                *i += 1;
                loop {
                    match tokens.get(*i).map(|t| &t.1) {
                        None => return,
                        Some(Token::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Token::Punct(',')) => *i += 1,
                        Some(_) => expand(tokens, i, path.clone(), out),
                    }
                }
            }
            Token::Punct(',') | Token::Punct('}') => break,
            // `pub(crate)` and the like before the path.
            Token::Punct(_) => *i += 1,
        }
    }
    if let Some(last) = path.last() {
        let binding = if last == "self" {
            path.pop();
            path.last().cloned()
        } else {
            Some(last.clone())
        };
        out.push((path, binding));
    }
}

/// Blanks comments, string and char literals (keeping line breaks), so words in them are no
/// paths.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_hashes(&chars, i + 1).is_some()
        {
            let hashes = raw_string_hashes(&chars, i + 1).unwrap_or(0);
            i += 2 + hashes;
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += closing.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&skipped) = chars.get(i) {
                    out.push(blank(skipped));
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// For `r"…"` or `r#"…"#` starting after the `r` at `i`: the number of `#`s.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<usize> {
    let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
    (chars.get(i + hashes) == Some(&'"')).then_some(hashes)
}

fn tokenize(text: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((line, Token::Ident(chars[start..i].iter().collect())));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push((line, Token::PathSep));
            i += 2;
        } else {
            tokens.push((line, Token::Punct(c)));
            i += 1;
        }
    }
    tokens
}

/// Drops each item under `#[cfg(test)]`: up to its `;`, or to the end of its `{ … }`.
fn drop_cfg_test_items(tokens: &[(usize, Token)]) -> Vec<(usize, Token)> {
    let cfg_test: Vec<Token> = ["#", "[", "cfg", "(", "test", ")", "]"]
        .iter()
        .map(|s| match *s {
            "cfg" | "test" => Token::Ident((*s).to_owned()),
            other => Token::Punct(other.chars().next().unwrap_or(' ')),
        })
        .collect();
    let mut kept = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let starts_cfg_test = tokens[i..]
            .iter()
            .map(|(_, t)| t)
            .take(cfg_test.len())
            .eq(cfg_test.iter());
        if !starts_cfg_test {
            kept.push(tokens[i].clone());
            i += 1;
            continue;
        }
        i += cfg_test.len();
        let mut depth = 0usize;
        while i < tokens.len() {
            let token = &tokens[i].1;
            i += 1;
            match token {
                Token::Punct('{' | '(' | '[') => depth += 1,
                Token::Punct('}' | ')' | ']') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && *token == Token::Punct('}') {
                        break;
                    }
                }
                Token::Punct(';') if depth == 0 => break,
                _ => {}
            }
        }
    }
    kept
}

/// Edges between top-level modules that do not point to a lower layer.
fn layer_violations(edges: &[Edge], layers: &[&[&str]]) -> Vec<String> {
    let layer_of = |top: &str| layers.iter().position(|layer| layer.contains(&top));
    let mut problems = BTreeSet::new();
    for edge in edges {
        let (from, to) = (edge.from.top(), edge.to.top());
        if from == to {
            continue;
        }
        let problem = match (layer_of(from), layer_of(to)) {
            (None, _) => format!(
                "{from}: a top-level module in no layer; add it to LAYERS in tests/layers.rs"
            ),
            (_, None) => {
                format!("{to}: a top-level module in no layer; add it to LAYERS in tests/layers.rs")
            }
            (Some(f), Some(t)) if t == f => format!(
                "{}: {} → {} joins two modules of one layer ({}), which must not use each other",
                edge.at,
                edge.from.name(),
                edge.to.name(),
                layers[f].join(", ")
            ),
            (Some(f), Some(t)) if t > f => format!(
                "{}: {} → {} points up: `{from}` is in layer {} and may use only lower layers, `{to}` is in layer {}",
                edge.at,
                edge.from.name(),
                edge.to.name(),
                f + 1,
                t + 1
            ),
            _ => continue,
        };
        problems.insert(problem);
    }
    problems.into_iter().collect()
}

/// One message per cycle of file-level modules, naming each edge round it.
fn cycles(edges: &[Edge]) -> Vec<String> {
    let mut next: BTreeMap<&Module, BTreeMap<&Module, &Edge>> = BTreeMap::new();
    for edge in edges {
        next.entry(&edge.from)
            .or_default()
            .entry(&edge.to)
            .or_insert(edge);
    }
    let mut problems = Vec::new();
    for component in strongly_connected(&next) {
        if component.len() < 2 {
            continue;
        }
        let cycle = cycle_through(&component, &next);
        let mut text = format!(
            "a cycle between {}:",
            component
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for edge in cycle {
            let _ = write!(
                text,
                "\n      {}: {} → {}",
                edge.at,
                edge.from.name(),
                edge.to.name()
            );
        }
        problems.push(text);
    }
    problems
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(
    next: &BTreeMap<&'a Module, BTreeMap<&'a Module, &Edge>>,
) -> Vec<Vec<&'a Module>> {
    struct State<'a> {
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        components: Vec<Vec<&'a Module>>,
    }
    fn visit<'a>(
        node: &'a Module,
        next: &BTreeMap<&'a Module, BTreeMap<&'a Module, &Edge>>,
        state: &mut State<'a>,
    ) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for &to in next.get(node).into_iter().flat_map(|m| m.keys()) {
            if !state.index.contains_key(to) {
                visit(to, next, state);
                let low = state.low[node].min(state.low[to]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.low[node].min(state.index[to]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top);
                if top == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in next.keys() {
        if !state.index.contains_key(node) {
            visit(node, next, &mut state);
        }
    }
    state.components.sort();
    state.components
}

/// The edges of one cycle inside a strongly connected component, from its first module back.
fn cycle_through<'a>(
    component: &[&'a Module],
    next: &BTreeMap<&'a Module, BTreeMap<&'a Module, &'a Edge>>,
) -> Vec<&'a Edge> {
    let start = component[0];
    let inside: BTreeSet<&Module> = component.iter().copied().collect();
    // Breadth-first from `start` to a module with an edge back to it: the shortest cycle.
    let mut came_by: BTreeMap<&Module, &Edge> = BTreeMap::new();
    let mut frontier = vec![start];
    let mut seen = BTreeSet::from([start]);
    while !frontier.is_empty() {
        let mut further = Vec::new();
        for node in frontier {
            for (&to, &edge) in next.get(node).into_iter().flatten() {
                if to == start {
                    let mut cycle = vec![edge];
                    let mut at = node;
                    while let Some(&edge) = came_by.get(at) {
                        cycle.push(edge);
                        at = &edge.from;
                    }
                    cycle.reverse();
                    return cycle;
                }
                if inside.contains(to) && seen.insert(to) {
                    came_by.insert(to, edge);
                    further.push(to);
                }
            }
        }
        frontier = further;
    }
    Vec::new()
}

mod checks_of_the_check {
    use super::*;

    fn module(path: &str) -> Module {
        Module(path.split("::").map(str::to_owned).collect())
    }

    fn edges_in(files: &[(&str, &str)]) -> Vec<(String, String)> {
        let modules: Vec<Module> = files.iter().map(|(m, _)| module(m)).collect();
        let sources: Vec<(&str, &Module, &str)> = files
            .iter()
            .zip(&modules)
            .map(|((name, text), module)| (*name, module, *text))
            .collect();
        edges_of(&sources)
            .into_iter()
            .map(|e| (e.from.name(), e.to.name()))
            .collect()
    }

    fn pair(from: &str, to: &str) -> (String, String) {
        (from.to_owned(), to.to_owned())
    }

    #[test]
    fn use_trees_super_self_and_code_paths_are_edges_and_comments_strings_and_tests_are_not() {
        let edges = edges_in(&[
            ("a", "mod b;\nmod c;\npub use c::Thing;"),
            (
                "a::b",
                "use super::c::{self, Other};\nfn f() { crate::d::go(); }",
            ),
            ("a::c", "pub struct Thing;\npub struct Other;"),
            (
                "d",
                "// use crate::e::Nope;\nconst S: &str = \"crate::e::x\";\n\
                 #[cfg(test)]\nmod tests { use crate::e::Nope; }\nuse crate::a::Thing;",
            ),
            ("e", "pub struct Nope;"),
        ]);
        assert_eq!(
            edges,
            vec![
                pair("a::b", "a::c"),
                pair("a::b", "a::c"),
                pair("a::b", "d"),
                pair("d", "a::c")
            ],
            "the re-export of Thing leads to a::c, where it is defined"
        );
    }

    #[test]
    fn an_edge_up_the_layers_is_reported_with_its_file_and_rule() {
        let edges = vec![Edge {
            from: module("low"),
            to: module("high::part"),
            at: "src/low.rs:3".to_owned(),
        }];
        let problems = layer_violations(&edges, &[&["low"], &["high"]]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("src/low.rs:3: low → high::part points up"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_cycle_is_named_edge_by_edge() {
        let edge = |from: &str, to: &str, line: usize| Edge {
            from: module(from),
            to: module(to),
            at: format!("src/x.rs:{line}"),
        };
        let edges = vec![
            edge("m::a", "m::b", 1),
            edge("m::b", "m::c", 2),
            edge("m::c", "m::a", 3),
            edge("m::c", "m::d", 4),
        ];
        let problems = cycles(&edges);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0],
            "a cycle between m::a, m::b, m::c:\n      src/x.rs:1: m::a → m::b\n      \
             src/x.rs:2: m::b → m::c\n      src/x.rs:3: m::c → m::a"
        );
        assert!(cycles(&edges[..3 - 1]).is_empty());
    }
}
