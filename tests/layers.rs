//! The layers, read from the sources: the data path (storage format, MySQL knowledge, backup and
//! restore, archive, retention) never imports Kubernetes code. Only the files listed in
//! [`KUBERNETES_SIDE`] may; a new module is on the data path unless it is added there.

use std::path::{Path, PathBuf};

/// Files and folders under `src/` that are the Kubernetes side: the resources, the controller, the
/// builders of its objects, and the binary that dispatches to both sides.
const KUBERNETES_SIDE: &[&str] = &["crd", "controller", "main.rs", "cli.rs", "lib.rs"];

/// What the data path must not name.
const FORBIDDEN: &[&str] = &["crate::crd", "crate::controller", "kube::", "use kube", "k8s_openapi"];

/// The forbidden name a line of code uses, if any (comments do not count).
fn offends(line: &str) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or_default();
    FORBIDDEN.iter().find(|w| code.contains(*w)).copied()
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

#[test]
fn the_data_path_never_imports_kubernetes_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut data_path = 0;
    let mut offences = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel.components().next().expect("a component").as_os_str().to_string_lossy();
        if KUBERNETES_SIDE.contains(&top.as_ref()) {
            continue;
        }
        data_path += 1;
        let text = std::fs::read_to_string(file).expect("read a source");
        for (n, line) in text.lines().enumerate() {
            if let Some(word) = offends(line) {
                offences.push(format!("src/{}:{}: names {word}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(data_path >= 20, "only {data_path} data-path files found under {}", src.display());
    assert!(offences.is_empty(), "the data path imports Kubernetes code:\n{}", offences.join("\n"));
}

#[test]
fn the_check_finds_an_import() {
    // The check itself: a line naming the controller is an offence, a comment naming it is not.
    assert_eq!(offends("    use crate::controller::run::shutdown_signal;"), Some("crate::controller"));
    assert_eq!(offends("    let s = crate::controller::build::LABEL_SCHEDULE;"), Some("crate::controller"));
    assert_eq!(offends("use k8s_openapi::api::batch::v1::Job;"), Some("k8s_openapi"));
    assert_eq!(offends("    // unlike crate::controller, this module is pure"), None);
}
