//! The per-user runtime directory where a primary keeps its sockets.
//!
//! `$XDG_RUNTIME_DIR/herdsman` when that is set, else `/tmp/herdsman-UID`. The directory must be
//! owned by the user and mode 0700, so that no other user can plant or read a socket in it.
//! Each primary works in its own subdirectory `run-PID`, removed when it exits; one left behind
//! by a primary that was killed is removed by the next primary that starts.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The base directory for this user's clusters.
pub fn base() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("herdsman"),
        _ => std::env::temp_dir().join(format!("herdsman-{}", nix::unistd::getuid())),
    }
}

/// Creates `path` as a private directory, or checks that an existing one is private and ours.
pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(false)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::DirBuilder::new().mode(0o700).create(path)?;
            return Ok(());
        }
        Err(error) => return Err(error),
    }
    let metadata = fs::symlink_metadata(path)?;
    let uid = nix::unistd::getuid().as_raw();
    if !metadata.is_dir() || metadata.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by uid {uid}; remove it",
                path.display()
            ),
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// This primary's own directory; removed with everything in it when dropped.
#[derive(Debug)]
pub struct PrimaryDir {
    path: PathBuf,
}

impl PrimaryDir {
    pub fn create() -> io::Result<PrimaryDir> {
        let base = base();
        ensure_private_dir(&base)?;
        remove_stale(&base);
        let path = base.join(format!("run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        ensure_private_dir(&path)?;
        Ok(PrimaryDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrimaryDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes `run-PID` directories whose primary no longer runs.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix("run-")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_created_0700_and_tightened() {
        let root = std::env::temp_dir().join(format!("herdsman-test-{}", std::process::id()));
        let dir = root.join("nested");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(&root).unwrap();
    }
}
