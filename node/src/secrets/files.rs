//! Files and directories only the node's user may read: the data dir (0700), the SQLite
//! database with its `-wal` and `-shm` files, the admin token and key files (0600). On
//! other systems than Unix the modes are left to the platform.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Mode of the data dir: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the node's files: the owner reads and writes.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) with mode 0700 and sets an existing `dir` to 0700 (the
/// data dir is the node's own). Fails when `dir` cannot be created, or when it was created
/// here and its mode cannot be set; an existing directory whose mode cannot be set (another
/// user's) is answered as `Ok(Some(error))`, for a warning.
pub fn create_private_dir(dir: &Path) -> std::io::Result<Option<std::io::Error>> {
    let existed = dir.is_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(dir)?;
    match set_mode(dir, PRIVATE_DIR_MODE) {
        Ok(()) => Ok(None),
        Err(error) if existed => Ok(Some(error)),
        Err(error) => Err(error),
    }
}

/// Writes `contents` and a newline to `path`, created (or truncated) with mode 0600.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = private_file_options()
        .create(true)
        .truncate(true)
        .open(path)?;
    // an existing file keeps its mode through open: set it
    set_mode(path, PRIVATE_FILE_MODE)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Creates `path` with `contents` and mode 0600 unless it exists; whether it was created.
pub fn create_private(path: &Path, contents: &str) -> std::io::Result<bool> {
    let mut file = match private_file_options().create_new(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(error) => return Err(error),
    };
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(true)
}

/// The file of an SQLite URL (`sqlite://path?…`, `sqlite:path`), `None` for other databases
/// and in-memory ones.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Makes an SQLite database file and its `-wal` and `-shm` files 0600: creates the database
/// file with that mode when missing (SQLite gives its other files the database's mode) and
/// sets it on the files that exist. Does nothing for other databases.
pub fn protect_sqlite_files(url: &str) -> std::io::Result<()> {
    let Some(database) = sqlite_file(url) else {
        return Ok(());
    };
    if !database.exists() && database.parent().is_none_or(Path::exists) {
        match private_file_options().create_new(true).open(&database) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = database.clone().into_os_string();
        name.push(suffix);
        let path = PathBuf::from(name);
        if path.exists() {
            set_mode(&path, PRIVATE_FILE_MODE)?;
        }
    }
    Ok(())
}

/// Options that write a file, made with mode 0600.
fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    options
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite://./d/salesboy.db?mode=rwc"),
            Some(PathBuf::from("./d/salesboy.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:/a/b.db"),
            Some(PathBuf::from("/a/b.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_and_dirs_get_owner_only_modes() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(create_private_dir(&dir).unwrap().is_none());
        assert_eq!(mode(&dir), 0o700);
        let made = dir.join("a/b");
        assert!(create_private_dir(&made).unwrap().is_none());
        assert_eq!(mode(&made), 0o700);
        let file = dir.join("token");
        std::fs::write(&file, "old").unwrap();
        write_private(&file, "new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(!create_private(&file, "other").unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new\n");
    }
}
