//! `docs/architecture.md` §13 maps every source file of the workspace: this test keeps the
//! map and the tree in step (a file missing from the map, or a row for a file that is gone).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "protocol",
    "actors",
    "node",
    "testkit",
    "simulations",
    "examples",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, root: &Path, into: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, root, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src");
            into.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The rows of the map: `crate/src/` heading → file names of that section's table.
fn mapped_files(map: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut section: Option<&str> = None;
    for line in map.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            section = heading.split('`').next();
        } else if let (Some(dir), Some(row)) = (section, line.strip_prefix("| `")) {
            let file = row.split('`').next().unwrap_or_default();
            files.insert(format!("{dir}{file}"));
        }
    }
    files
}

#[test]
fn architecture_maps_every_source_file() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("architecture.md");
    let map = doc
        .split("## 13. Module map")
        .nth(1)
        .expect("architecture.md has a section `## 13. Module map`");
    let mapped = mapped_files(map);

    let mut actual = BTreeSet::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = BTreeSet::new();
        rust_files(&src, &src, &mut files);
        actual.extend(files.into_iter().map(|f| format!("{krate}/src/{f}")));
    }

    let missing: Vec<_> = actual.difference(&mapped).collect();
    let stale: Vec<_> = mapped.difference(&actual).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/architecture.md §13 is out of step with the tree: missing rows {missing:?}, rows for files that are gone {stale:?}"
    );
}
