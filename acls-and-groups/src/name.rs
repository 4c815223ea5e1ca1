//! Validated names of groups, databases and views.
//!
//! Each is a cheap-to-clone shared string (`Arc<str>`), so decisions can name what matched
//! without copying text. All three compare, hash and order as their text, and borrow as `&str`,
//! so maps keyed by them can be searched with a plain `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 64;
/// Longest database name, in bytes (CouchDB's limit).
pub const MAX_DB_NAME_LEN: usize = 238;
/// Longest view name, in bytes.
pub const MAX_VIEW_NAME_LEN: usize = 256;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `name` against the naming rule.
            pub fn new(name: &str) -> Result<Self> {
                $check(name).map_err(|reason| Error::invalid_name($what, name, reason))?;
                Ok($name(Arc::from(name)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;

            fn try_from(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a group (`me`, `friends`, `kitchen-devices`): 1 to 64 bytes of lowercase ASCII
    /// letters, digits, `-`, `_` and `.`, starting with a letter or digit. Lowercase only, so that
    /// one group has one spelling; a user interface may show a friendlier label.
    GroupName,
    "group name",
    check_group_name
);

name_type!(
    /// The name of a database, by CouchDB's rule: 1 to 238 bytes, starting with a lowercase
    /// letter (or with `_` and a lowercase letter, for system databases such as `_users`), then
    /// lowercase letters, digits and any of `_ $ ( ) + - /`.
    DbName,
    "database name",
    check_db_name
);

name_type!(
    /// The name of a view (a CouchDB `design/view` pair, a Mango index name, ...): 1 to 256 bytes
    /// of any text without control characters.
    ViewName,
    "view name",
    check_view_name
);

fn check_group_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN {
        return Err("a group name is 1 to 64 bytes long");
    }
    let mut bytes = name.bytes();
    if !bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err("a group name starts with a lowercase letter or a digit");
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)) {
        return Err("a group name uses only a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}

fn check_db_name(name: &str) -> Result<(), &'static str> {
    if name == "*" {
        return Err(
            "`*` stands for all databases and is not a database name (use AclScope::AllDatabases)",
        );
    }
    if name.is_empty() || name.len() > MAX_DB_NAME_LEN {
        return Err("a database name is 1 to 238 bytes long");
    }
    let rest = name.strip_prefix('_').unwrap_or(name);
    let mut bytes = rest.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_lowercase()) {
        return Err(
            "a database name starts with a lowercase letter (system databases with '_' and a letter)",
        );
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_$()+-/".contains(&b)) {
        return Err("a database name uses only a-z, 0-9 and any of _ $ ( ) + - /");
    }
    Ok(())
}

fn check_view_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_VIEW_NAME_LEN {
        return Err("a view name is 1 to 256 bytes long");
    }
    if name.chars().any(char::is_control) {
        return Err("a view name has no control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in [
            "me",
            "friends",
            "0day",
            "kitchen-devices",
            "a.b_c",
            &"x".repeat(64),
        ] {
            assert_eq!(GroupName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Friends",
            "-me",
            "_me",
            "a b",
            "grüppe",
            "group:x",
            &"x".repeat(65),
        ] {
            let err = GroupName::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid group name"), "{err}");
        }
    }

    #[test]
    fn db_names() {
        for ok in [
            "photos",
            "_users",
            "_replicator",
            "a$b(c)+d-e/f_9",
            &"d".repeat(238),
        ] {
            assert_eq!(DbName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "*",
            "Photos",
            "9lives",
            "_",
            "__x",
            "a b",
            "a.b",
            &"d".repeat(239),
        ] {
            assert!(DbName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            DbName::new("*")
                .unwrap_err()
                .to_string()
                .contains("all databases")
        );
    }

    #[test]
    fn view_names() {
        for ok in ["by-date", "app/by date", "ünïcode", &"v".repeat(256)] {
            assert!(ViewName::new(ok).is_ok());
        }
        for bad in ["", "a\nb", "\u{7f}", &"v".repeat(257)] {
            assert!(ViewName::new(bad).is_err());
        }
    }

    #[test]
    fn lookup_by_str_and_serde() {
        let mut map = std::collections::HashMap::new();
        map.insert(DbName::new("photos").unwrap(), 1);
        assert_eq!(map.get("photos"), Some(&1));
        let name: GroupName = serde_json::from_str("\"friends\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"friends\"");
        assert!(serde_json::from_str::<GroupName>("\"Friends\"").is_err());
    }
}
