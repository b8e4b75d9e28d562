//! The layering of this crate, checked from its source: dependencies between modules point
//! one way, no stage imports another, and no two files import each other, directly or around
//! a circle. Reads `crate::` and `super::` paths, the only ways files of one crate refer to
//! each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module may use (besides itself).
const ALLOWED: [(&str, &[&str]); 11] = [
    ("config", &[]),
    ("protocol", &["config"]),
    ("delivery", &["protocol"]),
    ("learn", &["protocol", "config"]),
    ("observe", &["protocol", "learn"]),
    ("stage", &["protocol", "config", "observe"]),
    ("gate", &["protocol", "config", "observe"]),
    (
        "stages",
        &[
            "protocol", "config", "delivery", "learn", "observe", "stage", "gate",
        ],
    ),
    ("error", &["protocol", "config"]),
    (
        "supervisor",
        &[
            "protocol", "config", "delivery", "learn", "observe", "stage", "error",
        ],
    ),
    (
        "",
        &[
            "protocol",
            "config",
            "delivery",
            "learn",
            "observe",
            "stage",
            "stages",
            "gate",
            "error",
            "supervisor",
        ],
    ),
];

/// A source file and the module path it defines (`["protocol", "frame"]`; `[]` for lib.rs).
#[derive(Debug, Clone)]
struct SourceFile {
    module: Vec<String>,
    text: String,
}

fn source_files() -> BTreeMap<PathBuf, SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src");
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("readable file");
            files.insert(relative.to_path_buf(), SourceFile { module, text });
        }
    }
    files
}

/// The module paths a file refers to (`crate::a::b`, `super::c`, one level of braces).
fn references(file: &SourceFile) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // `super` of `a/b.rs` (module `a::b`) is `a`; of `a/mod.rs` (module `a`), the crate.
    let mut parent = file.module.clone();
    parent.pop();
    let text = &file.text;
    // Inside a file's `mod tests`, `super` is the file itself: only the code above counts.
    let tests_at = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    let supers = text[..tests_at].match_indices("super::");
    for (start, _) in text.match_indices("crate::").chain(supers) {
        // Not part of a longer identifier (`my_crate::`).
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[start..];
        let (base, rest) = if let Some(rest) = rest.strip_prefix("crate::") {
            (Vec::new(), rest)
        } else {
            (parent.clone(), &rest["super::".len()..])
        };
        let mut path = base;
        let mut tail = rest;
        loop {
            let ident: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if ident.is_empty() {
                break;
            }
            path.push(ident.clone());
            tail = &tail[ident.len()..];
            match tail.strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        if let Some(group) = tail.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let first: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() {
                    let mut inner = path.clone();
                    inner.push(first);
                    found.push(inner);
                }
            }
        }
        found.push(path);
    }
    found
}

/// The file that defines the longest prefix of `path`.
fn resolve(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]).cloned())
}

fn top(module: &[String]) -> &str {
    module.first().map_or("", String::as_str)
}

#[test]
fn dependencies_point_one_way_and_stages_stay_apart() {
    let files = source_files();
    assert!(files.len() > 20, "found only {} files", files.len());
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|(path, file)| (file.module.clone(), path.clone()))
        .collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut violations = Vec::new();
    for (path, file) in &files {
        if top(&file.module) == "layering" {
            continue;
        }
        let from = top(&file.module);
        for reference in references(file) {
            let Some(target) = resolve(&reference, &modules) else {
                continue;
            };
            if &target == path {
                continue;
            }
            let to_module = &files[&target].module;
            let to = top(to_module);
            if to != from && !allowed.get(from).is_some_and(|a| a.contains(&to)) {
                violations.push(format!(
                    "{} ({from}) uses {} ({to})",
                    path.display(),
                    target.display()
                ));
            }
            // A stage never imports another stage.
            if from == "stages"
                && to == "stages"
                && file.module.len() > 1
                && to_module.len() > 1
                && file.module[1] != to_module[1]
            {
                violations.push(format!(
                    "stage {} imports stage {}",
                    path.display(),
                    target.display()
                ));
            }
            edges.entry(path.clone()).or_default().insert(target);
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));

    // No circle between files: a depth-first search finds no back edge.
    fn visit(
        node: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, bool>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|p| p == node).unwrap_or(0);
                let mut circle = stack[start..].to_vec();
                circle.push(node.clone());
                return Some(circle);
            }
            None => {}
        }
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, state, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        state.insert(node.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(node, &edges, &mut state, &mut stack) {
            let circle: Vec<String> = circle.iter().map(|p| p.display().to_string()).collect();
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_stage_importing_another() {
    // The check must be able to fail: a made-up stage that imports merge.
    let file = SourceFile {
        module: vec!["stages".into(), "tracking".into()],
        text: "use crate::stages::merge::Merge;\nuse super::{publish, sequencer::X};".into(),
    };
    let refs = references(&file);
    assert!(refs.contains(&vec!["stages".into(), "merge".into(), "Merge".into()]));
    assert!(refs.contains(&vec!["stages".into(), "publish".into()]));
    assert!(refs.contains(&vec!["stages".into(), "sequencer".into()]));
}
