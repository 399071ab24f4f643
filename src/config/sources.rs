//! The paths the kernel event sources (`events`) read, taken from the config.

use std::path::PathBuf;

use crate::config::Config;

/// What the sources read, from the config (`paths.*`).
#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub kmsg: PathBuf,
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub state_dir: PathBuf,
}

impl SourcesConfig {
    pub fn from_config(cfg: &Config) -> SourcesConfig {
        SourcesConfig {
            kmsg: cfg.paths.kmsg.clone(),
            sysfs: cfg.paths.sysfs.clone(),
            procfs: cfg.paths.procfs.clone(),
            state_dir: cfg.paths.state_dir.clone(),
        }
    }
}
