//! Images, as this node knows them: each known image is the host's own system directories plus a few
//! files of the image's. The operator's image is the built operator binary at `/mysql-backup-operator`;
//! `mariadb:*` is the MariaDB installed on this machine with stand-ins for the official image's
//! `docker-entrypoint.sh` and `healthcheck.sh` and its `/etc/mysql`. Any other image is unknown, and a
//! pod that asks for one fails saying so.

use std::path::{Path, PathBuf};

use crate::runtime::{Mount, MountKind};

/// What the node was told about images.
#[derive(Debug, Clone)]
pub struct Images {
    /// The operator binary that images named `…/mysql-backup-operator:…` run.
    pub operator_binary: PathBuf,
    /// The folder of the images' own files (`e2e/node/images`).
    pub files: PathBuf,
}

/// A resolved image: its default command and its files.
#[derive(Debug, Clone)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
}

/// The repository's last path segment: `ghcr.io/x/mysql-backup-operator:1.0` → `mysql-backup-operator`.
fn short_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

impl Images {
    /// The image `name`, or why this node cannot run it.
    pub fn resolve(&self, name: &str) -> Result<Image, String> {
        let bind = |target: &str, source: PathBuf, read_only: bool| Mount {
            target: target.into(),
            kind: MountKind::Bind { source, read_only },
        };
        match short_name(name) {
            "mysql-backup-operator" => {
                if !self.operator_binary.is_file() {
                    return Err(format!(
                        "image {name}: the operator binary {} does not exist (build it with scripts/build-static)",
                        self.operator_binary.display()
                    ));
                }
                Ok(Image {
                    entrypoint: vec!["/mysql-backup-operator".into()],
                    cmd: vec!["controller".into()],
                    mounts: vec![bind("/mysql-backup-operator", self.operator_binary.clone(), true)],
                    env: vec![],
                })
            }
            "mariadb" => {
                let dir = self.files.join("mariadb");
                if !Path::new("/usr/sbin/mariadbd").exists() {
                    return Err(format!("image {name}: MariaDB is not installed on this machine (scripts/test-deps)"));
                }
                Ok(Image {
                    entrypoint: vec!["docker-entrypoint.sh".into()],
                    cmd: vec!["mariadbd".into()],
                    mounts: vec![
                        bind("/usr/local/bin", dir.join("bin"), true),
                        bind("/etc/mysql", dir.join("etc-mysql"), true),
                        Mount { target: "/run/mysqld".into(), kind: MountKind::Tmpfs { mode: 0o1777 } },
                    ],
                    env: vec![("MARIADB_MAJOR".into(), "10.11".into())],
                })
            }
            _ => Err(format!(
                "image {name} is not known to the local node: it runs mysql-backup-operator and mariadb images only"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_registry_tag_and_digest() {
        assert_eq!(short_name("ghcr.io/a/mysql-backup-operator:0.1.0"), "mysql-backup-operator");
        assert_eq!(short_name("mariadb:10.11"), "mariadb");
        assert_eq!(short_name("docker.io/library/mariadb@sha256:ab"), "mariadb");
        assert_eq!(short_name("localhost:5000/mariadb"), "mariadb");
    }

    #[test]
    fn unknown_images_are_named() {
        let images = Images { operator_binary: "/nonexistent".into(), files: "/nonexistent".into() };
        assert_eq!(
            images.resolve("nginx:1").unwrap_err(),
            "image nginx:1 is not known to the local node: it runs mysql-backup-operator and mariadb images only"
        );
    }
}
