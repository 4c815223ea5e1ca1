//! A design document's views as an index definition, and its signature.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::reduce::Builtin;

/// Bumped when the index layout or what a map function sees changes: every index rebuilds.
const FORMAT: &str = "couch-sync view index 1";

/// One view of a design document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewDef {
    pub(crate) name: String,
    pub(crate) map: String,
    pub(crate) reduce: Option<Reduce>,
}

/// A view's reduce function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reduce {
    Builtin(Builtin),
    Js(String),
}

/// The views of one design document, built together into one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Design {
    pub(crate) id: String,
    pub(crate) language: String,
    /// Sorted by name; a view's position is its table number.
    pub(crate) views: Vec<ViewDef>,
    /// `options.include_design`: map design documents too.
    pub(crate) include_design: bool,
    /// `options.local_seq`: documents carry `_local_seq`.
    pub(crate) local_seq: bool,
    /// Hex SHA-256 (first 16 bytes) of everything that decides the index's content.
    pub(crate) signature: String,
}

impl Design {
    /// Reads a design document's `views`, `language` and `options`. Views without a string
    /// `map` are not views (CouchDB skips them too).
    pub(crate) fn parse(id: &str, doc: &Map<String, Value>) -> Result<Design> {
        let language = doc
            .get("language")
            .and_then(Value::as_str)
            .unwrap_or("javascript")
            .to_owned();
        let options = doc.get("options").and_then(Value::as_object);
        let flag = |name: &str| {
            options
                .and_then(|o| o.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let mut views = Vec::new();
        if let Some(defs) = doc.get("views").and_then(Value::as_object) {
            for (name, def) in defs {
                let Some(map) = def.get("map").and_then(Value::as_str) else {
                    continue;
                };
                let reduce = match def.get("reduce").and_then(Value::as_str) {
                    None => None,
                    Some(src) if src.trim_start().starts_with('_') => {
                        Some(Reduce::Builtin(Builtin::parse(src).ok_or_else(|| {
                            Error::couch(
                                400,
                                "invalid_design_doc",
                                format!(
                                    "Unknown builtin reduce function: {}",
                                    src.trim().chars().take(60).collect::<String>()
                                ),
                            )
                        })?))
                    }
                    Some(src) => Some(Reduce::Js(src.to_owned())),
                };
                views.push(ViewDef {
                    name: name.clone(),
                    map: map.to_owned(),
                    reduce,
                });
            }
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let include_design = flag("include_design");
        let local_seq = flag("local_seq");
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(FORMAT.as_bytes());
        field(language.as_bytes());
        field(&[u8::from(include_design), u8::from(local_seq)]);
        for v in &views {
            field(v.name.as_bytes());
            field(v.map.as_bytes());
            match &v.reduce {
                None => field(b"-"),
                Some(Reduce::Builtin(b)) => field(format!("builtin {b:?}").as_bytes()),
                Some(Reduce::Js(src)) => field(src.as_bytes()),
            }
        }
        let digest = h.finalize();
        let signature = data_encoding::HEXLOWER.encode(digest.get(..16).unwrap_or(&digest));
        Ok(Design {
            id: id.to_owned(),
            language,
            views,
            include_design,
            local_seq,
            signature,
        })
    }

    /// The position of view `name`.
    pub(crate) fn view(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Design {
        Design::parse("_design/d", v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn signature_follows_functions_only() {
        let a = parse(json!({"views": {"b": {"map": "m1"}, "a": {"map": "m2", "reduce": "_sum"}}}));
        let b = parse(
            json!({"views": {"a": {"map": "m2", "reduce": "_sum"}, "b": {"map": "m1"}},
            "filters": {"x": "y"}}),
        );
        assert_eq!(a.signature, b.signature);
        assert_eq!(a.views[0].name, "a");
        assert_eq!(a.views[0].reduce, Some(Reduce::Builtin(Builtin::Sum)));
        let c =
            parse(json!({"views": {"a": {"map": "m2", "reduce": "_count"}, "b": {"map": "m1"}}}));
        assert_ne!(a.signature, c.signature);
        let d = parse(
            json!({"views": {"a": {"map": "m2", "reduce": "_sum"}, "b": {"map": "m1"}},
            "options": {"include_design": true}}),
        );
        assert_ne!(a.signature, d.signature);
        assert_eq!(a.signature.len(), 32);
    }

    #[test]
    fn unknown_builtin() {
        let err = Design::parse(
            "_design/d",
            json!({"views": {"a": {"map": "m", "reduce": "_nope"}}})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
