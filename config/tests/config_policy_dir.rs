//! `policy_dir`: one policy per `*.yaml`/`*.yml` file directly inside it, relative to the
//! configuration file, appended after the inline policies in file-name order, with names
//! required and unique, and errors naming the file and line.

use std::fs;
use std::path::PathBuf;

use mesh7_config::ConfigErrors;
use mesh7_config::load::{LoadedConfig, load_with_env};

/// A configuration directory: `mesh7.yaml` plus files under it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::write(dir.path().join("mesh7.yaml"), config).expect("config written");
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().expect("files are inside the directory"))
                .expect("directory created");
            fs::write(path, text).expect("file written");
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn load(&self) -> Result<LoadedConfig, ConfigErrors> {
        load_with_env(&self.path("mesh7.yaml"), &|_| None)
    }

    fn errors(&self) -> Vec<String> {
        match self.load() {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }
}

fn policy(name: &str) -> String {
    format!("name: {name}\nagent: \"*\"\nrules:\n  - tools: [\"*\"]\n    action: allow\n")
}

const INLINE_TWO: &str = "\
policy_dir: policies.d
policies:
  - name: inline-1
    rules: []
  - name: inline-2
    rules: []
";

#[test]
fn merges_inline_policies_then_files_in_name_order() {
    let setup = Setup::new(
        INLINE_TWO,
        &[
            ("policies.d/b.yaml", &policy("b")),
            ("policies.d/a.yml", &policy("a")),
            ("policies.d/c.yaml", &policy("c")),
            ("policies.d/README.md", "not a policy"),
            ("policies.d/c.yaml.bak", "not: [a policy"),
            ("policies.d/sub/d.yaml", &policy("d")),
            ("policies.d/dir.yaml/e.yaml", &policy("e")),
        ],
    );
    let loaded = setup.load().unwrap();
    let names: Vec<&str> = loaded
        .config
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["inline-1", "inline-2", "a", "b", "c"]);
    assert_eq!(
        loaded.policy_sources,
        [
            "policies[0]",
            "policies[1]",
            "policies.d/a.yml",
            "policies.d/b.yaml",
            "policies.d/c.yaml"
        ]
    );
    assert_eq!(loaded.config.policies[2].rules.len(), 1);
    assert_eq!(
        loaded.policy_dir,
        Some(fs::canonicalize(setup.path("policies.d")).unwrap())
    );
    assert!(loaded.warnings.is_empty());
}

#[test]
fn resolves_the_directory_against_the_config_file_not_the_cwd() {
    for policy_dir in ["policies.d", "./policies.d", "../conf/policies.d"] {
        let setup = Setup::new("", &[("conf/policies.d/a.yaml", &policy("a"))]);
        let config = setup.path("conf/mesh7.yaml");
        fs::write(&config, format!("policy_dir: {policy_dir}\n")).unwrap();
        let loaded = load_with_env(&config, &|_| None).unwrap();
        assert_eq!(loaded.config.policies.len(), 1, "{policy_dir}");
        assert_eq!(
            loaded.policy_dir,
            Some(fs::canonicalize(setup.path("conf/policies.d")).unwrap())
        );
        assert_eq!(loaded.policy_sources, ["policies.d/a.yaml"], "{policy_dir}");
    }
}

#[test]
fn accepts_an_absolute_directory_and_names_its_files_in_full() {
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("x.yaml"), policy("x")).unwrap();
    let dir = fs::canonicalize(elsewhere.path()).unwrap();
    let setup = Setup::new(&format!("policy_dir: {}\n", dir.display()), &[]);
    let loaded = setup.load().unwrap();
    assert_eq!(
        loaded.policy_sources,
        [dir.join("x.yaml").display().to_string()]
    );
}

#[test]
fn a_missing_directory_is_a_warning() {
    let setup = Setup::new("policy_dir: nowhere\npolicies:\n  - name: inline\n", &[]);
    let loaded = setup.load().unwrap();
    assert_eq!(loaded.config.policies.len(), 1);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].contains("nowhere"),
        "{}",
        loaded.warnings[0]
    );
    assert!(
        loaded.warnings[0].contains("does not exist"),
        "{}",
        loaded.warnings[0]
    );
    assert_eq!(loaded.policy_dir, Some(setup.path("nowhere")));
}

#[test]
fn an_empty_directory_adds_nothing() {
    let setup = Setup::new("policy_dir: policies.d\n", &[("policies.d/notes.txt", "x")]);
    let loaded = setup.load().unwrap();
    assert!(loaded.config.policies.is_empty());
    assert!(loaded.warnings.is_empty());
}

#[test]
fn a_policy_dir_that_is_a_file_is_an_error() {
    let setup = Setup::new(
        "policy_dir: policies.yaml\n",
        &[("policies.yaml", &policy("a"))],
    );
    let errors = setup.load().unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(
        errors.0[0].path,
        fs::canonicalize(setup.path("policies.yaml"))
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(errors.0[0].message, "policy_dir is not a directory");
}

#[test]
fn duplicate_names_across_inline_and_files_name_both_places() {
    let setup = Setup::new(
        INLINE_TWO,
        &[
            ("policies.d/a.yaml", &policy("inline-2")),
            ("policies.d/b.yaml", &policy("shared")),
            ("policies.d/c.yaml", &policy("shared")),
        ],
    );
    assert_eq!(
        setup.errors(),
        [
            "policies.d/a.yaml: name: duplicate policy name \"inline-2\" (policies[1] and policies.d/a.yaml) (line 1)",
            "policies.d/c.yaml: name: duplicate policy name \"shared\" (policies.d/b.yaml and policies.d/c.yaml) (line 1)",
        ]
    );
}

#[test]
fn duplicate_inline_names_are_errors_but_unnamed_inline_policies_are_not() {
    let setup = Setup::new(
        "policies:\n  - name: same\n  - name: same\n  - agent: a\n  - agent: b\n",
        &[],
    );
    assert_eq!(
        setup.errors(),
        ["policies[1].name: duplicate policy name \"same\" (policies[0] and policies[1]) (line 3)"]
    );
}

#[test]
fn a_file_policy_needs_a_name() {
    let setup = Setup::new(
        "policy_dir: policies.d\n",
        &[
            ("policies.d/a.yaml", "agent: \"*\"\nrules: []\n"),
            ("policies.d/b.yaml", "name: \"\"\n"),
            ("policies.d/c.yaml", ""),
        ],
    );
    assert_eq!(
        setup.errors(),
        [
            "policies.d/a.yaml: missing required field 'name'",
            "policies.d/b.yaml: missing required field 'name'",
            "policies.d/c.yaml: missing required field 'name'",
        ]
    );
}

#[test]
fn errors_inside_files_carry_the_file_and_line() {
    let setup = Setup::new(
        "policy_dir: policies.d\nport: x\n",
        &[
            ("policies.d/a.yaml", &policy("a")),
            (
                "policies.d/b.yaml",
                "name: b\nrules:\n  - tools: [x]\n    action: alow\n  - tool: [y]\n    action: deny\n",
            ),
            ("policies.d/c.yaml", "name: c\nrules: [\n"),
            ("policies.d/d.yaml", "name: d\nname: d2\nagnet: x\n"),
            ("policies.d/e.yaml", "- name: e\n"),
        ],
    );
    assert_eq!(
        setup.errors(),
        [
            "port: invalid type: string \"x\", expected u16 (line 2)",
            "policies.d/b.yaml: rules[0].action: unknown value \"alow\" (expected allow, deny or human_approval), did you mean `allow`? (line 4)",
            "policies.d/b.yaml: rules[1].tool: unknown field, did you mean `tools`? (line 5)",
            "policies.d/c.yaml: did not find expected node content, while parsing a flow node (line 3)",
            "policies.d/d.yaml: name: duplicate key, first defined at line 1 (line 2)",
            "policies.d/d.yaml: agnet: unknown field, did you mean `agent`? (line 3)",
            "policies.d/e.yaml: invalid type: sequence, expected a mapping (line 1)",
        ]
    );
}

#[test]
fn policy_compile_errors_in_files_carry_the_file_and_line() {
    let setup = Setup::new(
        "policy_dir: policies.d\n",
        &[(
            "policies.d/a.yaml",
            "name: a\nrules:\n  - tools: [x]\n    action: deny\n    condition:\n      field: note\n      operator: matches\n      value: \"(\"\n",
        )],
    );
    let errors = setup.load().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(
        errors.0[0].path,
        "policies.d/a.yaml: rules[0].condition.value"
    );
    assert_eq!(errors.0[0].line, Some(8));
}

#[test]
fn file_policies_read_the_same_keys_as_inline_ones() {
    let setup = Setup::new(
        "policy_dir: policies.d\n",
        &[(
            "policies.d/a.yaml",
            "name: a\nagent: \"support-*\"\nrate_limit: { max_per_minute: 5, max_total: 100 }\nrules:\n  - tools: [\"tickets.*\"]\n    action: human_approval\n",
        )],
    );
    let loaded = setup.load().unwrap();
    let policy = &loaded.config.policies[0];
    assert_eq!(policy.agent, "support-*");
    assert_eq!(policy.rate_limit.unwrap().max_total, 100);
    assert_eq!(policy.rules[0].action, mesh7_config::Action::HumanApproval);
}
