//! Where the store lives by default: `--root` > `STOWAGE_ROOT` > `/var/lib/stowage` when
//! running as root > `$XDG_DATA_HOME/stowage` > `~/.local/share/stowage`.

use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// System-wide root used when running as uid 0.
pub const SYSTEM_ROOT: &str = "/var/lib/stowage";

/// The inputs of root resolution, separated from the environment for testing.
#[derive(Debug, Clone, Default)]
pub struct RootInputs {
    /// `--root` from the command line.
    pub cli_root: Option<PathBuf>,
    /// `STOWAGE_ROOT`.
    pub env_root: Option<PathBuf>,
    /// Effective uid is 0.
    pub is_root: bool,
    /// `XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
}

impl RootInputs {
    /// Reads the environment and the effective uid; `cli_root` is `--root`.
    pub fn from_env(cli_root: Option<&Path>) -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            cli_root: cli_root.map(Path::to_owned),
            env_root: var("STOWAGE_ROOT"),
            is_root: rustix::process::geteuid().is_root(),
            xdg_data_home: var("XDG_DATA_HOME"),
            home: var("HOME"),
        }
    }

    /// Applies the precedence rules. XDG_DATA_HOME is ignored unless absolute, as the XDG
    /// spec requires.
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(root) = self.cli_root.as_ref().or(self.env_root.as_ref()) {
            return Ok(root.clone());
        }
        if self.is_root {
            return Ok(PathBuf::from(SYSTEM_ROOT));
        }
        if let Some(xdg) = self.xdg_data_home.as_ref().filter(|p| p.is_absolute()) {
            return Ok(xdg.join("stowage"));
        }
        match &self.home {
            Some(home) => Ok(home.join(".local/share/stowage")),
            None => Err(StoreError::NoRoot(
                "HOME and XDG_DATA_HOME are not set".to_owned(),
            )),
        }
    }
}

/// The store root for this process given an optional `--root`.
pub fn default_root(cli_root: Option<&Path>) -> Result<PathBuf> {
    RootInputs::from_env(cli_root).resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let base = RootInputs {
            cli_root: Some("/cli".into()),
            env_root: Some("/env".into()),
            is_root: true,
            xdg_data_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(base.resolve().unwrap(), PathBuf::from("/cli"));
        let no_cli = RootInputs {
            cli_root: None,
            ..base.clone()
        };
        assert_eq!(no_cli.resolve().unwrap(), PathBuf::from("/env"));
        let no_env = RootInputs {
            env_root: None,
            ..no_cli.clone()
        };
        assert_eq!(no_env.resolve().unwrap(), PathBuf::from(SYSTEM_ROOT));
        let user = RootInputs {
            is_root: false,
            ..no_env.clone()
        };
        assert_eq!(user.resolve().unwrap(), PathBuf::from("/xdg/stowage"));
        let relative_xdg = RootInputs {
            xdg_data_home: Some("rel".into()),
            ..user.clone()
        };
        assert_eq!(
            relative_xdg.resolve().unwrap(),
            PathBuf::from("/home/u/.local/share/stowage")
        );
        let nothing = RootInputs {
            xdg_data_home: None,
            home: None,
            ..user
        };
        assert!(matches!(nothing.resolve(), Err(StoreError::NoRoot(_))));
    }
}
