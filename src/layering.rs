//! Who may import whom: the crate's modules in layers, lowest first. A
//! module may use only modules listed before it; the test below reads the
//! sources and fails on any `crate::<module>` reference that goes up (or
//! sideways to a module it does not list as below it).
//!
//! ```text
//! cli, server            transports: wire formats in and out
//! service                the one API: auth, limits, metrics, audit
//! pipeline               operators run on events into another table
//! projection             aggregates kept up to date as events arrive
//! dsl, query             the read path (sessions, plans, limits)
//! audit                  the audit log, written through db
//! db                     tables, WAL, buffers, flusher, maintenance
//! ingest, storage, wal   decoding events; Delta/Parquet; the log
//! ratelimit, config, auth, background, dedup, schema, metrics, fault, ids
//! ```

/// The modules of the crate, lowest layer first. `fuzz_tests` is a test
/// harness over the whole crate and sits on top.
pub(crate) const LAYERS: &[&str] = &[
    "ids",
    "backup",
    "fault",
    "metrics",
    "schema",
    "dedup",
    "background",
    "auth",
    "config",
    "ratelimit",
    "policy",
    "wal",
    "storage",
    "ingest",
    "db",
    "audit",
    "query",
    "dsl",
    "governance",
    "projection",
    "pipeline",
    "service",
    "server",
    "cli",
    "fuzz_tests",
];

/// The layer of `module`, if it is one of the crate's.
pub(crate) fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// The crate modules `source` refers to as `crate::<name>`, including
/// inside `use crate::{a, b::c}`; comments are skipped.
pub(crate) fn references(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = &rest[..at];
            rest = &rest[at + "crate::".len()..];
            // `$crate::` in macros and names ending in `crate` are not paths.
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push(name);
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Every reference in `source` (a file of `module`) that is not to a
/// lower layer, as `module -> target`.
pub(crate) fn violations(module: &str, source: &str) -> Vec<String> {
    let Some(own) = rank(module) else {
        return vec![format!("{module}: not in the layer list")];
    };
    references(source)
        .into_iter()
        .filter(|target| target != module)
        .filter(|target| rank(target).is_none_or(|r| r > own))
        .map(|target| format!("{module} -> {target}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

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

    #[test]
    fn no_module_imports_a_higher_one() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut found = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            if matches!(module.as_str(), "lib" | "main" | "layering") {
                continue;
            }
            let source = std::fs::read_to_string(&file).unwrap();
            for v in violations(&module, &source) {
                found.push(format!("{}: {v}", relative.display()));
            }
        }
        assert!(
            found.is_empty(),
            "imports against the layers (src/layering.rs):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn an_upward_import_is_caught() {
        let planted = "use crate::query::QueryEngine;\nuse crate::{ids, server::http};\n";
        assert_eq!(violations("db", planted), ["db -> query", "db -> server"]);
        assert!(violations("server", planted).is_empty());
        // Comments, `$crate::` and the module's own paths do not count.
        let quiet = "// see crate::server\nuse $crate::x;\nuse crate::db::Table;\n";
        assert!(violations("db", quiet).is_empty());
        assert_eq!(violations("nosuch", ""), ["nosuch: not in the layer list"]);
    }
}
