//! Temporary stand-in until the selector module lands.
use serde_json::Value;

use crate::error::{Error, Result};

/// A Mango selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Value);

impl Selector {
    /// Parses a selector.
    pub fn parse(selector: &Value) -> Result<Selector> {
        match selector {
            Value::Object(_) => Ok(Selector(selector.clone())),
            _ => Err(Error::bad_request("selector must be an object")),
        }
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Value) -> bool {
        let _ = doc;
        true
    }
}
