//! The debug `salesboy` binary, for tests that run it as a process.

use std::path::PathBuf;
use std::process::Command;

use parking_lot::Mutex;

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// Builds the debug `salesboy` binary (a no-op when it is up to date) and returns its path.
///
/// It is built as `cargo test --workspace` builds it, so that under that command (the
/// README's, CI's) this is a no-op:
/// - `cargo test --workspace --no-run`: the same packages, so the same features of every
///   dependency (`cargo build -p salesboy-node` resolves them without the workspace's
///   dev-dependencies and rebuilds half the dependency tree);
/// - without the variables cargo sets for a test process (`TEST_PROCESS_VARIABLES`):
///   build scripts that watch them (ring's watches `CARGO_PKG_NAME`, `OUT_DIR`, …) would
///   run again, and everything above them be rebuilt, here and at the next `cargo test`.
pub fn salesboy_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock();
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["test", "--workspace", "--no-run", "--quiet"])
        .current_dir(&root);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if TEST_PROCESS_VARIABLES
            .iter()
            .any(|set| name == *set || (set.ends_with('_') && name.starts_with(set)))
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building the salesboy binary failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join("salesboy");
    assert!(path.is_file(), "{} was not built", path.display());
    *built = Some(path.clone());
    path
}

/// What cargo sets for a test process (names, and prefixes ending in `_`), and not for
/// itself: cargo reads them as they are when it decides whether a build script runs again.
const TEST_PROCESS_VARIABLES: [&str; 11] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];
