//! Loading: read, parse to a located tree (YAML syntax errors and duplicate keys), expand
//! `${VAR}`, deserialize strictly, merge `policy_dir`, validate.
//!
//! Every error found is reported, not only the first: each top-level entry, each list element
//! (`policies[i]`, `rules[j]`, `cli_tools[k]`, …) and each `policy_dir` file is deserialized on its
//! own, every unknown key is reported even when its neighbours are fine, and validation runs on
//! whatever deserialized. Each error names its path and, when known, its line.

pub(crate) mod de;
pub(crate) mod tree;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::interpolate::{self, Env};
use crate::schema::{
    CliToolConfig, Config, McpServerConfig, OpenApiConfig, PolicyConfig, RuleConfig,
};
use crate::validate::{self, Doc, Indices, PolicySource};
use de::{Sink, from_node};
use tree::{Kind, Node, Problem};

/// One configuration error. Shown as `<path>: <message> (line N)`, e.g.
/// ``policies[2].rules[0].acton: unknown field, did you mean `action`? (line 14)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a path in the configuration (`server.bind`, `cli_tools[1] (git)`), a file
    /// (`policies.d/b.yaml`), or both (`policies.d/b.yaml: rules[0].action`).
    pub path: String,
    /// 1-based line in the file the path is in.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every error of a load, the configuration file's first (by line), then each policy file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, e) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// `policies` holds the inline policies, then those of `policy_dir` in file-name order.
    pub config: Config,
    pub config_path: PathBuf,
    /// `policy_dir` resolved against the configuration file's directory, canonical if it exists.
    pub policy_dir: Option<PathBuf>,
    /// For each entry of `config.policies`: `policies[i]`, or the file it came from.
    pub policy_sources: Vec<String>,
    /// Problems that do not stop the load, e.g. a missing `policy_dir`.
    pub warnings: Vec<String>,
}

/// Loads a configuration file, with `${VAR}` taken from the process environment.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    load_with_env(path, &process_env)
}

/// Loads a configuration from text; `path` only locates `policy_dir` and names the file.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    load_str_with_env(text, path, &process_env)
}

/// [`load`] with `${VAR}` looked up in `env`.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let text = fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.display().to_string(),
            line: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str_with_env(&text, path, env)
}

/// [`load_str`] with `${VAR}` looked up in `env`.
pub fn load_str_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let (main, problems) = Document::read(path.display().to_string(), text.to_owned(), env)
        .map_err(|p| {
            ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                line: p.line,
                message: p.message,
            }])
        })?;
    let mut errors = Errors::default();
    let sink = Sink::default();
    let parsed = parse_config(&main.tree, &sink);
    errors.problems(
        Doc::Main,
        &main,
        problems.into_iter().chain(sink.into_problems()),
    );

    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let policy_dir = parsed
        .config
        .policy_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|dir| {
            let dir = base_dir.join(dir);
            read_policy_dir(dir, &base_dir, env, &mut files, &mut errors, &mut warnings)
        });
    for (k, file) in files.iter_mut().enumerate() {
        if file.name_missing {
            let message = "missing required field 'name'".to_owned();
            errors.push(
                Doc::File(k),
                ConfigError {
                    path: file.label.clone(),
                    line: None,
                    message,
                },
            );
        }
        let problems = std::mem::take(&mut file.problems);
        match &file.document {
            Some(document) => errors.problems(Doc::File(k), document, problems.into_iter()),
            None => {
                for p in problems {
                    errors.push(
                        Doc::File(k),
                        ConfigError {
                            path: file.label.clone(),
                            line: p.line,
                            message: p.message,
                        },
                    );
                }
            }
        }
    }

    let mut issues = validate::config(&parsed.config, &parsed.indices);
    let mut sources: Vec<PolicySource<'_>> = parsed
        .policies
        .iter()
        .map(|(i, policy)| PolicySource {
            doc: Doc::Main,
            at: tree::Path::root().key("policies").index(*i),
            label: format!("policies[{i}]"),
            policy,
        })
        .collect();
    for (k, file) in files.iter().enumerate() {
        if let Some(policy) = &file.policy {
            let (doc, at, label) = (Doc::File(k), tree::Path::root(), file.label.clone());
            sources.push(PolicySource {
                doc,
                at,
                label,
                policy,
            });
        }
    }
    issues.extend(validate::policies(&sources, &parsed.config.taint.labels()));
    for issue in issues {
        let document = match issue.doc {
            Doc::Main => Some(&main),
            Doc::File(k) => files.get(k).and_then(|f| f.document.as_ref()),
        };
        let line = document.and_then(|d| d.line(&issue.at, None));
        errors.push(
            issue.doc,
            ConfigError {
                path: issue.shown,
                line,
                message: issue.message,
            },
        );
    }

    if !errors.0.is_empty() {
        return Err(errors.into_sorted());
    }
    let policy_sources = sources.iter().map(|s| s.label.clone()).collect();
    let mut config = parsed.config;
    config.policies = sources.iter().map(|s| s.policy.clone()).collect();
    Ok(LoadedConfig {
        config,
        config_path: path.to_path_buf(),
        policy_dir,
        policy_sources,
        warnings,
    })
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Errors with the document they belong to, for ordering.
#[derive(Default)]
struct Errors(Vec<(Doc, ConfigError)>);

impl Errors {
    fn push(&mut self, doc: Doc, error: ConfigError) {
        self.0.push((doc, error));
    }

    /// Names each problem's place: a path in the configuration file is shown alone, one in a
    /// policy file after the file's name.
    fn problems(&mut self, doc: Doc, document: &Document, problems: impl Iterator<Item = Problem>) {
        for p in problems {
            let path = match (doc, p.path.is_root()) {
                (_, true) => document.label.clone(),
                (Doc::Main, false) => p.path.to_string(),
                (Doc::File(_), false) => format!("{}: {}", document.label, p.path),
            };
            let line = document.line(&p.path, p.line);
            self.push(
                doc,
                ConfigError {
                    path,
                    line,
                    message: p.message,
                },
            );
        }
    }

    fn into_sorted(mut self) -> ConfigErrors {
        let rank = |doc: &Doc| match doc {
            Doc::Main => 0,
            Doc::File(k) => k + 1,
        };
        self.0
            .sort_by_key(|(doc, e)| (rank(doc), e.line.unwrap_or(usize::MAX)));
        ConfigErrors(self.0.into_iter().map(|(_, e)| e).collect())
    }
}

/// A parsed YAML file, kept to place its errors.
struct Document {
    /// How the file is named in errors.
    label: String,
    text: String,
    tree: Node,
}

impl Document {
    /// Parses YAML into a located tree, reports duplicate keys and expands `${VAR}`. A syntax
    /// error ends the document (nothing after it can be trusted).
    fn read(
        label: String,
        text: String,
        env: Env<'_>,
    ) -> Result<(Document, Vec<Problem>), Problem> {
        let mut tree = Node::parse(&text).map_err(|e| Problem {
            path: tree::Path::root(),
            line: e.location().map(|l| l.line()),
            message: yaml_message(&e),
        })?;
        let mut problems = Vec::new();
        tree.remove_duplicate_keys(&tree::Path::root(), &mut problems);
        interpolate::expand_tree(&mut tree, &tree::Path::root(), env, &mut problems);
        Ok((Document { label, text, tree }, problems))
    }

    /// The line of `path`: the one already known, else the tree's, else the parser's, else the
    /// nearest the tree knows.
    fn line(&self, path: &tree::Path, known: Option<usize>) -> Option<usize> {
        known
            .or_else(|| self.tree.locate(path))
            .or_else(|| tree::line_in_text(&self.text, path))
            .or_else(|| self.tree.locate_nearest(path))
    }
}

/// The parser's message without its first ` at line L column C`: the line is shown separately.
fn yaml_message(error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    let Some(location) = error.location() else {
        return message;
    };
    let position = format!(" at line {} column {}", location.line(), location.column());
    message.replacen(&position, "", 1)
}

struct ParsedConfig {
    /// Sections that deserialized, with only the list elements that did; `policies` stays empty
    /// (the inline policies are below, with their index).
    config: Config,
    /// Inline policies that deserialized, with their index.
    policies: Vec<(usize, PolicyConfig)>,
    indices: Indices,
}

const LIST_SECTIONS: [&str; 4] = ["policies", "mcp_servers", "cli_tools", "openapi"];

fn parse_config(root: &Node, sink: &Sink) -> ParsedConfig {
    let here = tree::Path::root();
    let mut config: Config = by_entries(root, &here, sink, &LIST_SECTIONS).unwrap_or_default();
    let policies = elements(
        root.get("policies"),
        &here.key("policies"),
        sink,
        parse_policy,
    );
    let mut indices = Indices::default();
    (indices.mcp_servers, config.mcp_servers) = elements(
        root.get("mcp_servers"),
        &here.key("mcp_servers"),
        sink,
        from_node::<McpServerConfig>,
    )
    .into_iter()
    .unzip();
    (indices.cli_tools, config.cli_tools) = elements(
        root.get("cli_tools"),
        &here.key("cli_tools"),
        sink,
        from_node::<CliToolConfig>,
    )
    .into_iter()
    .unzip();
    (indices.openapi, config.openapi) = elements(
        root.get("openapi"),
        &here.key("openapi"),
        sink,
        from_node::<OpenApiConfig>,
    )
    .into_iter()
    .unzip();
    ParsedConfig {
        config,
        policies,
        indices,
    }
}

/// A policy, inline or a file's; `None` if anything in it was wrong.
fn parse_policy(node: &Node, path: &tree::Path, sink: &Sink) -> Option<PolicyConfig> {
    let before = sink.len();
    let mut policy: PolicyConfig = by_entries(node, path, sink, &["rules"])?;
    if let Some(rules) = node.get("rules").filter(|r| r.is_seq()) {
        policy.rules = elements(
            Some(rules),
            &path.key("rules"),
            sink,
            from_node::<RuleConfig>,
        )
        .into_iter()
        .map(|(_, rule)| rule)
        .collect();
    }
    (sink.len() == before).then_some(policy)
}

/// Deserializes a struct whose fields all have defaults one entry at a time, so that a bad entry
/// does not hide the errors of the next ones; then the struct from the good entries. Entries
/// named in `lists` whose value is a sequence are left to the caller, element by element.
fn by_entries<T: DeserializeOwned>(
    node: &Node,
    path: &tree::Path,
    sink: &Sink,
    lists: &[&str],
) -> Option<T> {
    let Kind::Map(entries) = &node.kind else {
        return from_node(node, path, sink);
    };
    let good: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(key, value)| {
            !(value.is_seq() && key.as_str().is_some_and(|k| lists.contains(&k)))
        })
        .filter(|entry| {
            let single = Node::new(Kind::Map(vec![(*entry).clone()]), node.line);
            from_node::<T>(&single, path, sink).is_some()
        })
        .cloned()
        .collect();
    from_node(
        &Node::new(Kind::Map(good), node.line),
        path,
        &Sink::default(),
    )
}

/// Each element of a sequence on its own; the ones that deserialized, with their index.
fn elements<T>(
    node: Option<&Node>,
    path: &tree::Path,
    sink: &Sink,
    parse: impl Fn(&Node, &tree::Path, &Sink) -> Option<T>,
) -> Vec<(usize, T)> {
    let Some(Node {
        kind: Kind::Seq(items),
        ..
    }) = node
    else {
        return Vec::new();
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = path.index(i);
        if matches!(item.kind, Kind::Null) {
            // A bare `-`: an empty section would be its defaults, an empty element is a mistake.
            let message = "empty list element".to_owned();
            sink.push(Problem {
                path,
                line: item.line,
                message,
            });
        } else if let Some(value) = parse(item, &path, sink) {
            parsed.push((i, value));
        }
    }
    parsed
}

/// A `policy_dir` file and what came of it.
struct PolicyFile {
    /// The file's path relative to the configuration's directory when inside it.
    label: String,
    /// `None` when it could not be read or parsed.
    document: Option<Document>,
    policy: Option<PolicyConfig>,
    problems: Vec<Problem>,
    /// A file policy must be named (inline ones need not be).
    name_missing: bool,
}

/// Reads every `*.yaml` and `*.yml` file directly inside `dir`, in file-name order, each as one
/// policy. A missing directory is a warning (no file policies), as in flux7. Returns the
/// directory, canonical when it exists.
fn read_policy_dir(
    dir: PathBuf,
    base_dir: &Path,
    env: Env<'_>,
    files: &mut Vec<PolicyFile>,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> PathBuf {
    let dir_error = |message: String| ConfigError {
        path: dir.display().to_string(),
        line: None,
        message,
    };
    // globwalk panics on bases such as `./dir`, so it only ever sees a canonical path.
    let canonical = match fs::canonicalize(&dir) {
        Ok(canonical) => canonical,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "policy_dir {} does not exist; no policy files loaded",
                dir.display()
            ));
            return dir;
        }
        Err(e) => {
            errors.push(Doc::Main, dir_error(format!("cannot read policy_dir: {e}")));
            return dir;
        }
    };
    if !canonical.is_dir() {
        errors.push(
            Doc::Main,
            dir_error("policy_dir is not a directory".to_owned()),
        );
        return canonical;
    }
    let walker = globwalk::GlobWalkerBuilder::from_patterns(&canonical, &["*.yaml", "*.yml"])
        .max_depth(1)
        .follow_links(true)
        .file_type(globwalk::FileType::FILE)
        .build();
    let walker = match walker {
        Ok(walker) => walker,
        Err(e) => {
            errors.push(Doc::Main, dir_error(format!("cannot read policy_dir: {e}")));
            return canonical;
        }
    };
    let mut paths = Vec::new();
    for entry in walker {
        match entry {
            Ok(entry) => paths.push(entry.into_path()),
            Err(e) => errors.push(Doc::Main, dir_error(format!("cannot read policy_dir: {e}"))),
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let base = fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    for file in paths {
        let label = file
            .strip_prefix(&base)
            .unwrap_or(&file)
            .display()
            .to_string();
        files.push(read_policy_file(&file, label, env));
    }
    canonical
}

fn read_policy_file(file: &Path, label: String, env: Env<'_>) -> PolicyFile {
    let failed = |label, line, message| PolicyFile {
        label,
        document: None,
        policy: None,
        problems: vec![Problem {
            path: tree::Path::root(),
            line,
            message,
        }],
        name_missing: false,
    };
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return failed(label, None, format!("cannot read: {e}")),
    };
    let (document, mut problems) = match Document::read(label.clone(), text, env) {
        Ok(read) => read,
        Err(p) => return failed(label, p.line, p.message),
    };
    let sink = Sink::default();
    let policy = parse_policy(&document.tree, &tree::Path::root(), &sink);
    problems.extend(sink.into_problems());
    let name_missing = match document.tree.get("name").map(|n| &n.kind) {
        None | Some(Kind::Null) => matches!(document.tree.kind, Kind::Map(_) | Kind::Null),
        Some(Kind::Str { value, .. } | Kind::Expanded(value)) => value.is_empty(),
        // Other types and failed interpolations are already reported.
        Some(_) => false,
    };
    PolicyFile {
        label,
        document: Some(document),
        policy,
        problems,
        name_missing,
    }
}
