//! The layers, read from the sources. The data path (the storage format, MySQL knowledge, backup and
//! restore, the archive, garbage collection) never imports Kubernetes code; the controller reads what
//! an agent wrote only through `format`, never through the agent's own modules; and no source file
//! grows past [`MAX_LINES`].

use std::path::{Path, PathBuf};

/// Files and folders under `src/` that are the Kubernetes side: the resources, the controller, and
/// the binary that dispatches to both sides. Everything else is the data path.
const KUBERNETES_SIDE: &[&str] = &["crd", "controller", "main.rs", "cli.rs", "lib.rs"];

/// What the data path must not name.
const NOT_ON_THE_DATA_PATH: &[&str] = &["crate::crd", "crate::controller", "kube::", "use kube", "k8s_openapi"];

/// What the controller must not name: it learns what an agent did from `crate::format` alone.
const NOT_IN_THE_CONTROLLER: &[&str] = &["crate::agent", "crate::archive", "crate::datapath"];

/// The longest a source file may be.
const MAX_LINES: usize = 600;

/// The forbidden name a line of code uses, if any (comments do not count).
fn offends(line: &str, forbidden: &[&'static str]) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or_default();
    forbidden.iter().find(|w| code.contains(*w)).copied()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source under `src/`: its path below `src/`, its first component, and its text.
fn sources() -> Vec<(PathBuf, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
            let top = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).expect("read a source");
            (rel, top, text)
        })
        .collect()
}

fn offences(files: &[&(PathBuf, String, String)], forbidden: &[&'static str]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, _, text) in files {
        for (n, line) in text.lines().enumerate() {
            if let Some(word) = offends(line, forbidden) {
                out.push(format!("src/{}:{}: names {word}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn the_data_path_never_imports_kubernetes_code() {
    let all = sources();
    let data_path: Vec<_> = all.iter().filter(|(_, top, _)| !KUBERNETES_SIDE.contains(&top.as_str())).collect();
    assert!(data_path.len() >= 30, "only {} data-path files found", data_path.len());
    for folder in ["format", "mysql", "datapath", "archive", "gc"] {
        assert!(data_path.iter().any(|(_, top, _)| top == folder), "no data-path folder {folder}");
    }
    let found = offences(&data_path, NOT_ON_THE_DATA_PATH);
    assert!(found.is_empty(), "the data path imports Kubernetes code:\n{}", found.join("\n"));
}

#[test]
fn the_controller_reads_agent_output_only_through_format() {
    let all = sources();
    let controller: Vec<_> = all.iter().filter(|(_, top, _)| top == "controller" || top == "crd").collect();
    assert!(controller.len() >= 15, "only {} controller files found", controller.len());
    let found = offences(&controller, NOT_IN_THE_CONTROLLER);
    assert!(found.is_empty(), "the controller reaches past crate::format:\n{}", found.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "e2e", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 80, "only {} sources found", files.len());
    let long: Vec<String> = files
        .iter()
        .map(|file| (file, std::fs::read_to_string(file).expect("read a source").lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(file, lines)| format!("{}: {lines} lines", file.strip_prefix(root).unwrap_or(file).display()))
        .collect();
    assert!(long.is_empty(), "split these files (at most {MAX_LINES} lines):\n{}", long.join("\n"));
}

#[test]
fn the_check_finds_an_import() {
    // The check itself: a line naming the controller is an offence, a comment naming it is not.
    let data = NOT_ON_THE_DATA_PATH;
    assert_eq!(offends("    use crate::controller::run::shutdown_signal;", data), Some("crate::controller"));
    assert_eq!(offends("use k8s_openapi::api::batch::v1::Job;", data), Some("k8s_openapi"));
    assert_eq!(offends("    // unlike crate::controller, this module is pure", data), None);
    assert_eq!(offends("use crate::agent::Summary;", NOT_IN_THE_CONTROLLER), Some("crate::agent"));
    assert_eq!(offends("use crate::format::summary::Summary;", NOT_IN_THE_CONTROLLER), None);
}
