//! The debug `salesboy` binary, for tests that run it as a process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// Builds the debug `salesboy` binary (a no-op when it is up to date) and returns its path.
pub fn salesboy_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "-p", "salesboy-node", "--bin", "salesboy"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the salesboy binary failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join("salesboy");
    assert!(path.is_file(), "{} was not built", path.display());
    *built = Some(path.clone());
    path
}
