//! The layout the README promises, checked: no import cycle between the modules of
//! `src/core` (test code aside), no function in `src/` longer than 80 lines, and the core
//! free of host types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level core module a file belongs to (`src/core/docs/lease.rs` → `docs`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(root().join("src/core")).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Files that are test code only.
const TEST_ONLY: [&str; 6] = ["host_rules", "policy_tests", "robustness", "testing", "tests.rs", "tests"];

/// The code of a file before its `#[cfg(test)] mod tests` (test code may import
/// anything), without comments (a doc link is not an import).
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let at = ["#[cfg(test)]\nmod tests", "#[cfg(test)]\npub mod tests"].iter().filter_map(|m| text.find(m)).min();
    let code = match at {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_core_modules_form_layers_without_cycles() {
    let mut files = Vec::new();
    sources(&root().join("src/core"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let module = module_of(f);
        if TEST_ONLY.iter().any(|t| *t == module || *t == name) || module == "mod" {
            continue;
        }
        let text = non_test_code(f);
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::core::") {
            let rest = &text[i + "crate::core::".len()..];
            let dep: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !dep.is_empty() && dep != module && !TEST_ONLY.contains(&dep.as_str()) {
                deps.insert(dep);
            }
        }
        assert!(!text.contains("proxy_wasm") && !text.contains("crate::host"), "{} uses host types", f.display());
    }
    // Kahn: repeatedly remove modules that depend on nothing left.
    let mut left = graph.clone();
    while let Some(free) = left.iter().find(|(_, deps)| deps.iter().all(|d| !left.contains_key(d))).map(|(m, _)| m.clone()) {
        left.remove(&free);
    }
    assert!(left.is_empty(), "import cycle among: {:?}", left);
}

/// Whether `line` (trimmed) opens a function body.
fn opens_function(t: &str) -> bool {
    let t = ["pub(super) ", "pub(crate) ", "pub "].iter().fold(t, |t, p| t.strip_prefix(p).unwrap_or(t));
    let t = ["const ", "unsafe ", "extern \"C\" "].iter().fold(t, |t, p| t.strip_prefix(p).unwrap_or(t));
    t.starts_with("fn ") && !t.trim_end().ends_with(';')
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !opens_function(t) {
                continue;
            }
            // rustfmt closes a body with `}` at the indentation of its `fn`
            let indent = line.len() - t.len();
            let close = lines[i + 1..].iter().position(|l| l.trim() == "}" && l.len() - l.trim_start().len() == indent);
            if let Some(n) = close.filter(|n| n + 2 > 80) {
                long.push(format!("{}:{} ({} lines)", f.strip_prefix(root()).unwrap().display(), i + 1, n + 2));
            }
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
}
