//! Copying this binary into a directory: what the init container of an agent Job does, so that the
//! agent can run inside the database's own image (which has the server's tools but not this binary).
//! The operator image has no shell or `cp`; the binary copies itself.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Name of the binary in the target directory.
pub const BINARY_NAME: &str = "mysql-backup-operator";

/// Copies the running executable to `dir/mysql-backup-operator`, executable by everyone, atomically.
pub fn install_self(dir: &Path) -> io::Result<PathBuf> {
    let source = std::env::current_exe()?;
    let target = dir.join(BINARY_NAME);
    let staging = dir.join(format!(".{BINARY_NAME}.partial"));
    std::fs::copy(&source, &staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&staging, &target)?;
    Ok(target)
}
