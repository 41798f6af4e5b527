//! Every shipped example configuration and policy pack loads and validates.

mod common;

use std::path::Path;

use common::run;

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read policies dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let cfg = dir.join("mesh7.yaml");
        assert!(cfg.exists(), "{} has no mesh7.yaml", dir.display());
        configs.push(cfg);
    }
    assert!(!configs.is_empty());
    for cfg in configs {
        let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(
            (code, stdout.trim()),
            (0, "ok"),
            "{}: {stderr}",
            cfg.display()
        );
    }
}

#[test]
fn every_policy_pack_validates_as_a_policy_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(!files.is_empty());
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::copy(&file, dir.path().join("p").join(file.file_name().unwrap())).unwrap();
        let cfg = common::write_config(dir.path(), "policy_dir: p\n");
        let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(
            (code, stdout.trim()),
            (0, "ok"),
            "{}: {stderr}",
            file.display()
        );
    }
}
