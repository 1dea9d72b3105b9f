//! The process environment, read here only: `cli` passes [`ProcessEnv`] to `config::load`,
//! which resolves secrets and the proxy variables through the [`Env`] lookup it is given, so no
//! code below the entry point reads the environment itself.

use crate::config::Env;

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}
