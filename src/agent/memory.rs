//! Peak memory of a run, for sizing a Job's limit: the agent's own (`RUSAGE_SELF`), the largest tool
//! it ran (`RUSAGE_CHILDREN`: mariadb-backup, the private mariadbd, mariadb-binlog, mariadb), and,
//! where the kernel keeps one, the peak of the whole cgroup it runs in — a container's, children
//! included — which is what a memory limit counts.
//!
//! The cgroup's peak also counts page cache, which the kernel reclaims when the group reaches its
//! limit instead of killing a process: a run that reads gigabytes reports a peak near its limit, and
//! finishing inside the limit is the proof that it fits.

use std::path::{Path, PathBuf};

use crate::format::summary::MemoryPeaks;

/// Peak resident memory of this process, in bytes.
pub fn peak_rss_bytes() -> u64 {
    max_rss(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

fn max_rss(who: nix::sys::resource::UsageWho) -> u64 {
    nix::sys::resource::getrusage(who).map(|u| u64::try_from(u.max_rss()).unwrap_or(0) * 1024).unwrap_or(0)
}

/// The peaks of this run so far.
pub fn peaks() -> MemoryPeaks {
    MemoryPeaks {
        children_bytes: max_rss(nix::sys::resource::UsageWho::RUSAGE_CHILDREN),
        cgroup_bytes: std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| cgroup_peak_file(&text, Path::new("/sys/fs/cgroup")))
            .and_then(|file| std::fs::read_to_string(file).ok())
            .and_then(|text| text.trim().parse().ok()),
    }
}

/// The file holding the peak memory of the cgroup `/proc/self/cgroup` (`proc`) names, under the
/// cgroup file systems mounted at `root`: the v1 memory controller's `memory.max_usage_in_bytes`, or
/// the v2 group's `memory.peak` (kernel 5.19 on).
fn cgroup_peak_file(proc: &str, root: &Path) -> Option<PathBuf> {
    let relative = |p: &str| p.trim_start_matches('/').to_string();
    for line in proc.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let file = root.join("memory").join(relative(path)).join("memory.max_usage_in_bytes");
            if file.is_file() {
                return Some(file);
            }
        }
    }
    let path = proc.lines().find_map(|l| l.strip_prefix("0::"))?;
    [root.join(relative(path)), root.join("unified").join(relative(path))]
        .into_iter()
        .map(|dir| dir.join("memory.peak"))
        .find(|f| f.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_file_is_the_memory_controllers_of_our_group() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("memory/kubepods/pod1/c1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.max_usage_in_bytes"), "123\n").unwrap();
        let proc = "9:name=systemd:/\n4:memory:/kubepods/pod1/c1\n0::/\n";
        assert_eq!(cgroup_peak_file(proc, root.path()), Some(v1.join("memory.max_usage_in_bytes")));
        // cgroup v2 only: the unified group's memory.peak.
        let v2 = root.path().join("kubepods.slice/c2");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.peak"), "456\n").unwrap();
        assert_eq!(cgroup_peak_file("0::/kubepods.slice/c2\n", root.path()), Some(v2.join("memory.peak")));
        assert_eq!(cgroup_peak_file("0::/elsewhere\n", root.path()), None);
    }

    #[test]
    fn a_run_knows_its_own_peak() {
        assert!(peak_rss_bytes() > 1 << 20);
    }
}
