//! The dependency structure of `crates/switchboard/src`, kept one-way: each top-level part may
//! name only the parts below it (README.md, "Layout"). A `crate::x` path in code that
//! the table does not allow fails this test, so a new arrow is a decision written here, not an
//! accident found later. Also: the layout names every source file, and in `cluster/` the core
//! names no driver and no file is over 500 lines of code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each part and the parts it may use, from the bottom up. `app` (the composition root), `lib`
/// and `main` may use everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("error_code", &[]),
    ("pattern", &[]),
    ("clock", &[]),
    ("http", &[]),
    ("rate", &[]),
    ("trace", &[]),
    ("config", &["protocol", "pattern"]),
    ("tls", &["config"]),
    ("websocket", &["http", "tls"]),
    (
        "engine",
        &["protocol", "websocket", "http", "config", "pattern", "rate"],
    ),
    ("cors", &["http", "pattern", "config"]),
    (
        "hub",
        &[
            "engine",
            "protocol",
            "pattern",
            "config",
            "http",
            "clock",
            "rate",
            "error_code",
            "trace",
        ],
    ),
    ("cluster", &["hub", "config", "protocol", "clock"]),
    ("auth", &["config", "http", "hub", "error_code"]),
    ("forward", &["http", "engine"]),
    ("metrics", &["engine", "hub", "tls", "forward", "trace"]),
    (
        "rules",
        &[
            "config",
            "hub",
            "protocol",
            "pattern",
            "clock",
            "metrics",
            "error_code",
        ],
    ),
    (
        "backend",
        &[
            "config",
            "hub",
            "http",
            "metrics",
            "auth",
            "clock",
            "error_code",
            "trace",
        ],
    ),
    (
        "plain_ws",
        &[
            "backend",
            "auth",
            "config",
            "engine",
            "http",
            "hub",
            "clock",
            "websocket",
            "error_code",
        ],
    ),
    ("admin_ui", &["config", "engine", "hub", "clock"]),
    (
        "api",
        &[
            "config",
            "hub",
            "http",
            "clock",
            "metrics",
            "rules",
            "rate",
            "error_code",
            "trace",
        ],
    ),
    ("server", &["http", "cors", "engine", "tls"]),
    // A unit test's module: the memory budget of an idle connection, engine and hub together.
    ("connection_budget", &["engine", "hub"]),
];
// `fuzzing` drives every decoder, from every layer (the fuzz targets).
const ROOTS: &[&str] = &["app", "lib", "main", "fuzzing"];

/// The top-level parts a source text names with `crate::x` (comments left out).
fn named_parts(text: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                inner.split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    parts.insert(name);
                }
            }
        }
    }
    parts
}

fn visit(dir: &Path, root: &Path, found: &mut BTreeMap<String, BTreeSet<(String, String)>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            visit(&path, root, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let first = relative
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for part in named_parts(&text) {
            if part != first {
                found
                    .entry(first.clone())
                    .or_default()
                    .insert((part, relative.display().to_string()));
            }
        }
    }
}

#[test]
fn every_part_uses_only_the_parts_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    visit(&root, &root, &mut found);
    assert!(!found.is_empty(), "no source read under {}", root.display());
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (part, uses) in &found {
        if ROOTS.contains(&part.as_str()) {
            continue;
        }
        let Some(may_use) = allowed.get(part.as_str()) else {
            wrong.push(format!(
                "{part}: a part missing from the table in tests/layers.rs"
            ));
            continue;
        };
        for (used, file) in uses {
            if !may_use.contains(&used.as_str()) {
                wrong.push(format!("{file} uses crate::{used}, which {part} may not"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependency arrows against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_table_has_no_cycle() {
    // Every part may use only parts listed before it, so the table is an order.
    for (index, (part, uses)) in ALLOWED.iter().enumerate() {
        for used in *uses {
            let position = ALLOWED.iter().position(|(name, _)| name == used);
            assert!(
                position.is_some_and(|p| p < index),
                "{part} may use {used}, which is not listed before it"
            );
        }
    }
}

#[test]
fn paths_in_groups_and_comments_are_read_right() {
    let text = "use crate::{hub, http::X};\n// crate::api in a comment\nlet a = crate::engine::new_id(); // crate::rules\n";
    let parts: Vec<String> = named_parts(text).into_iter().collect();
    assert_eq!(parts, ["engine", "http", "hub"]);
}

/// Every `.rs` file under `dir`, with its path relative to `root`.
fn source_files(dir: &Path, root: &Path, found: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, root, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            found.push((relative.display().to_string(), text));
        }
    }
}

/// README.md's "Layout" block.
fn readme_layout() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap_or_default();
    let start = readme.find("## Layout").unwrap_or(readme.len());
    let rest = &readme[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |at| at + 1);
    rest[..end].to_owned()
}

#[test]
fn every_source_file_and_directory_is_named_in_the_readme_layout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layout = readme_layout();
    assert!(
        layout.contains("crates/switchboard/src/"),
        "README.md has no \"Layout\" block"
    );
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    assert!(files.len() > 50, "{} files read", files.len());
    let mut missing = Vec::new();
    for (relative, _) in &files {
        let path = Path::new(relative);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != "mod.rs" && !layout.contains(&name) {
            missing.push(relative.clone());
        }
        if let Some(parent) = path.parent().and_then(|p| p.file_name()) {
            let directory = format!("{}/", parent.to_string_lossy());
            if !layout.contains(&directory) {
                missing.push(directory);
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not in README.md's \"Layout\": {missing:?}"
    );
}

/// Lines of code before a file's unit tests.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn the_cluster_core_names_no_driver_and_no_cluster_file_is_over_500_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cluster = root.join("cluster");
    let mut files = Vec::new();
    source_files(&cluster, &cluster, &mut files);
    assert!(files.len() > 20, "{} files read", files.len());
    // The drivers; everything else in cluster/ is the core, its dialects and codecs.
    let drivers = ["memory.rs", "redis/", "postgres/"];
    let mut wrong = Vec::new();
    for (relative, text) in &files {
        let lines = code_lines(text);
        if lines > 500 {
            wrong.push(format!("cluster/{relative}: {lines} lines of code"));
        }
        if drivers.iter().any(|d| relative.starts_with(d)) || relative == "mod.rs" {
            continue;
        }
        let code: String = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        for driver in ["memory::", "redis::", "postgres::"] {
            if code.contains(driver) {
                wrong.push(format!("cluster/{relative} names {driver} (a driver)"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
