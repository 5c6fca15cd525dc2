//! The module layering of ARCHITECTURE.md, checked on the source: each top-level module uses only the
//! modules below it, and the files of `actors/` (one per actor or service) import each other without a
//! cycle. Comment lines are ignored, so a doc link does not count as a dependency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["domain", "metrics"],
    &["error", "config"],
    &["store", "ml"],
    &["cluster", "auth"],
    &["actors"],
    &["http"],
    &["demo", "import"],
];

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

/// The code of a file without its comment lines and its unit tests.
fn code(path: &Path) -> String {
    strip(&std::fs::read_to_string(path).unwrap())
}

fn strip(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names following `prefix` in `text` (`crate::store::x` with prefix `crate::` gives `store`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            // `crate::` preceded by an identifier character is part of another path (`$crate::`, `mycrate::`).
            *i == 0 || {
                let before = text.as_bytes()[i - 1];
                !before.is_ascii_alphanumeric() && before != b'_' && before != b'$'
            }
        })
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn top_level_modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        let Some(own) = layer_of(&module) else {
            continue; // lib.rs and main.rs wire everything together
        };
        for used in names_after(&code(&file), "crate::") {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                Some(_) => violations.push(format!("{} uses crate::{used}", relative.display())),
                None => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward or sideways imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_actor_modules_import_each_other_without_a_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/actors");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = code(&path);
        let mut deps = names_after(&text, "super::");
        deps.extend(names_after(&text, "crate::actors::"));
        graph.insert(name, deps);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    for (name, deps) in &mut graph {
        deps.remove(name);
    }
    assert!(graph.len() >= 8, "src/actors holds the actor modules: {graph:?}");
    // Kahn's algorithm: whatever cannot be ordered lies on a cycle.
    let mut remaining = graph.clone();
    loop {
        let free: Vec<String> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(n, _)| n.clone())
            .collect();
        if free.is_empty() {
            break;
        }
        for n in free {
            remaining.remove(&n);
        }
    }
    assert!(remaining.is_empty(), "import cycle among actors/: {remaining:?}");
}

#[test]
fn the_checks_see_a_cycle_and_an_upward_import() {
    // The same parsing the checks use, on text with known imports: the checks can fail.
    let text =
        "use crate::store::cache;\n// use crate::http::x;\nlet a = $crate::actors::y;\nsuper::org::OrgMsg";
    let text = strip(text);
    assert_eq!(
        names_after(&text, "crate::"),
        BTreeSet::from(["store".to_owned()])
    );
    assert_eq!(names_after(&text, "super::"), BTreeSet::from(["org".to_owned()]));
    assert!(layer_of("store") < layer_of("actors"));
    assert!(
        layer_of("ml") == layer_of("store"),
        "store and ml may not use each other"
    );
}
