//! The parts of `src/` form layers: no part imports a part that imports it back, and no
//! chain of imports runs in a circle. A part is a top-level module of the crate: a folder
//! under `src/` or a file beside `lib.rs` (`src/session.rs` and `src/session/` are one
//! part); `main.rs` is a part too. An import is any path from the crate root to a part in
//! the code, in a `use` line or inline, comments and string literals left out:
//! `crate::<part>` (`rig_agent::<part>` in `main.rs`), `super::<part>` where `super` is the
//! crate root, and `crate::<Name>` for a name `lib.rs` re-exports from a part.
//!
//! `.ci/layers` (CI's lint step) runs this alone and prints the parts floor by floor, each
//! importing only parts on lower floors: the layering docs/architecture.md's "Code map"
//! shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where an import was seen: `src/config/read.rs:251`.
type Places = Vec<String>;

/// Which part imports which, and where.
struct Graph {
    parts: BTreeSet<String>,
    edges: BTreeMap<(String, String), Places>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part a file belongs to: the first component under `src/`, without `.rs`.
/// `None` for `lib.rs`, the crate root that only declares the parts.
fn part_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    let name = first.as_os_str().to_str().unwrap();
    match name.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(name.to_string()),
    }
}

/// The code with comments, string and char literals blanked out (newlines kept, so byte
/// offsets still give line numbers).
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (rest.starts_with(b"r\"") || rest.starts_with(b"r#") || rest.starts_with(b"br"))
            && (i == 0 || !ident(b[i - 1]))
        {
            // A raw string: r"..", r#".."#, br".." (`r#ident` is a raw identifier).
            let start = i;
            let mut j = i + if rest[0] == b'b' { 2 } else { 1 };
            let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
            j += hashes;
            if b.get(j) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            j = (j + close.len()).min(b.len());
            blank(&mut out, start, j);
            i = j;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), or else a lifetime or label ('a).
            let end = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&c| c == b'\'').map(|n| i + 2 + n)
            } else {
                let ch = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(i + 1 + ch)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end + 1);
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The first segment of each path a `use` tree names: `a::b` gives `a`; `{a::b, c}` gives
/// `a` and `c`.
fn first_segments(code: &[u8], at: usize) -> Vec<String> {
    let skip_space = |mut i: usize| {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let word = |i: usize| {
        let end =
            code[i..].iter().position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).map_or(code.len(), |n| i + n);
        (String::from_utf8_lossy(&code[i..end]).into_owned(), end)
    };
    let i = skip_space(at);
    if code.get(i) != Some(&b'{') {
        return vec![word(i).0];
    }
    // A group: split at the commas of depth one.
    let mut names = Vec::new();
    let (mut depth, mut j, mut item_start) = (0usize, i, true);
    while j < code.len() {
        match code[j] {
            b'{' => {
                depth += 1;
                j += 1;
                if depth == 1 {
                    item_start = true;
                }
            }
            b'}' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => {
                item_start = true;
                j += 1;
            }
            c if c.is_ascii_whitespace() => j += 1,
            _ if depth == 1 && item_start => {
                let (w, end) = word(j);
                if !w.is_empty() {
                    names.push(w);
                }
                item_start = false;
                j = end.max(j + 1);
            }
            _ => j += 1,
        }
    }
    names
}

/// How deep the module of `file` is below the crate root: `src/net/mod.rs` and
/// `src/backoff.rs` are 1, `src/net/stream.rs` is 2. From there `super::` repeated this
/// often is the crate root.
fn depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).unwrap();
    rel.components().count() - usize::from(rel.file_name().is_some_and(|n| n == "mod.rs"))
}

/// Where the paths that start at the crate root begin (`prefix`, or `super::` repeated
/// `depth` times), and where the rest of each path starts.
fn root_paths(code: &[u8], prefix: &[u8], depth: usize) -> Vec<(usize, usize)> {
    let starts_word =
        |at: usize| !at.checked_sub(1).is_some_and(|k| code[k].is_ascii_alphanumeric() || b"_$:".contains(&code[k]));
    let mut out = Vec::new();
    for at in 0..code.len() {
        if !starts_word(at) {
            continue;
        }
        if code[at..].starts_with(prefix) {
            out.push((at, at + prefix.len()));
            continue;
        }
        let supers = (0..).take_while(|n| code[at + n * 7..].starts_with(b"super::")).count();
        if supers > 0 && supers == depth {
            out.push((at, at + supers * 7));
        }
    }
    out
}

/// The names `lib.rs` re-exports (`pub use agent::Agent;`), each with the part it comes
/// from: `crate::Agent` is an import of `agent`.
fn root_names(src: &Path, parts: &BTreeSet<String>) -> BTreeMap<String, String> {
    let code = code_only(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let code = String::from_utf8(code).unwrap();
    let mut names = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else { continue };
        let Some((part, rest)) = path.split_once("::") else { continue };
        if !parts.contains(part.trim()) {
            continue;
        }
        for name in rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|n| !n.is_empty()) {
            names.insert(name.to_string(), part.trim().to_string());
        }
    }
    names
}

fn graph() -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let parts: BTreeSet<String> = files.iter().filter_map(|f| part_of(&src, f)).collect();
    let root = root_names(&src, &parts);
    let mut edges: BTreeMap<(String, String), Places> = BTreeMap::new();
    for file in &files {
        let Some(me) = part_of(&src, file) else { continue };
        let code = code_only(&fs::read_to_string(file).unwrap());
        let prefix: &[u8] = if me == "main" { b"rig_agent::" } else { b"crate::" };
        for (at, after) in root_paths(&code, prefix, depth(&src, file)) {
            let line = code[..at].iter().filter(|&&c| c == b'\n').count() + 1;
            let place = format!("src/{}:{line}", file.strip_prefix(&src).unwrap().display());
            for name in first_segments(&code, after) {
                let part = if parts.contains(&name) { Some(name) } else { root.get(&name).cloned() };
                if let Some(part) = part.filter(|p| *p != me) {
                    edges.entry((me.clone(), part)).or_default().push(place.clone());
                }
            }
        }
    }
    Graph { parts, edges }
}

/// The parts floor by floor: floor 0 imports no part, each other floor only lower ones.
/// What is left over (`Err`) imports in a circle.
fn floors(g: &Graph) -> Result<Vec<Vec<String>>, BTreeSet<String>> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut floors = Vec::new();
    while placed.len() < g.parts.len() {
        let floor: Vec<String> = g
            .parts
            .iter()
            .filter(|p| !placed.contains(*p))
            .filter(|p| g.edges.keys().filter(|(from, _)| from == *p).all(|(_, to)| placed.contains(to)))
            .cloned()
            .collect();
        if floor.is_empty() {
            return Err(g.parts.difference(&placed).cloned().collect());
        }
        placed.extend(floor.iter().cloned());
        floors.push(floor);
    }
    Ok(floors)
}

fn show(g: &Graph, from: &str, to: &str) -> String {
    let places = &g.edges[&(from.to_string(), to.to_string())];
    format!("  {from} -> {to}: {}\n", places.join(", "))
}

#[test]
fn no_part_of_src_imports_a_part_that_imports_it_back() {
    let g = graph();
    let mut report = String::new();
    for (from, to) in g.edges.keys() {
        if from < to && g.edges.contains_key(&(to.clone(), from.clone())) {
            report += &format!("{from} <-> {to}\n{}{}", show(&g, from, to), show(&g, to, from));
        }
    }
    assert!(report.is_empty(), "parts of src/ that import each other:\n{report}");
}

#[test]
fn the_parts_of_src_import_in_no_circle_and_stand_in_floors() {
    let g = graph();
    // The check sees the imports at all: the runner uses the session, main the config and
    // the agent.
    for edge in [("runner", "session"), ("main", "config"), ("main", "agent")] {
        assert!(g.edges.contains_key(&(edge.0.to_string(), edge.1.to_string())), "{edge:?} not seen");
    }
    match floors(&g) {
        Ok(floors) => {
            for (n, floor) in floors.iter().enumerate().rev() {
                println!("floor {n}: {}", floor.join(", "));
            }
        }
        Err(left) => {
            // The circles are the groups of parts that each reach all the others.
            let reach = |from: &String| {
                let mut seen = BTreeSet::from([from.clone()]);
                let mut todo = vec![from.clone()];
                while let Some(p) = todo.pop() {
                    for (_, to) in g.edges.keys().filter(|(a, _)| *a == p) {
                        if seen.insert(to.clone()) {
                            todo.push(to.clone());
                        }
                    }
                }
                seen
            };
            let reaches: BTreeMap<&String, BTreeSet<String>> = left.iter().map(|p| (p, reach(p))).collect();
            let same_circle = |a: &String, b: &String| reaches[a].contains(b) && reaches[b].contains(a);
            let arrows: String = g
                .edges
                .keys()
                .filter(|(a, b)| left.contains(a) && left.contains(b) && same_circle(a, b))
                .map(|(a, b)| show(&g, a, b))
                .collect();
            panic!("parts of src/ that import in a circle:\n{arrows}");
        }
    }
}

#[test]
fn the_check_reads_paths_past_comments_strings_and_groups() {
    let code = code_only(
        "// crate::a\nlet s = \"crate::b\"; let r = r#\"crate::c\"#; let c = '\"'; fn f<'a>() {}\n\
         use crate::{d::X, e, f::{G, h}};\n/* crate::g /* nested */ crate::h */ crate::i::j();\n\
         use super::k; use super::super::l; my_crate::m(); use self::super::n;\n",
    );
    let names = |depth| -> Vec<String> {
        root_paths(&code, b"crate::", depth).into_iter().flat_map(|(_, after)| first_segments(&code, after)).collect()
    };
    assert_eq!(names(3), ["d", "e", "f", "i"]);
    assert_eq!(names(2), ["d", "e", "f", "i", "l"], "super::super:: is the root two modules down");
    assert_eq!(names(1), ["d", "e", "f", "i", "k"]);
}
