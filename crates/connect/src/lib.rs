pub mod adapter;
pub mod config;
pub mod encode;
mod error;
pub mod jq;
pub mod template;
pub mod writer;

pub use error::{ConfigError, ConfigErrors, Error, Result};
