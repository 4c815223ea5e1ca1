//! Who asks ([`Principal`]) and who is listed in groups and grants ([`Member`]).

use std::fmt;
use std::str::FromStr;

use public_key_identity::{KeyId, Peer};

use crate::error::{Error, Result};
use crate::name::GroupName;

/// Who is asking: the party a decision is about.
///
/// A server maps each connection to one: a client that proved a key (a TLS client certificate)
/// is [`Principal::Key`], one without a certificate is [`Principal::Anonymous`]
/// (`From<Peer>` does exactly this). The owner is the device's own key, set with
/// [`Policy::new`](crate::Policy::new): `Principal::Key(owner)` and [`Principal::Owner`] are both
/// the owner, who may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Principal {
    /// A party that proved it holds the key with this id.
    Key(KeyId),
    /// A party that proved no key (no client certificate).
    Anonymous,
    /// The device itself acting locally (its command line, its own replication manager), with no
    /// TLS peer in between; the same as `Key` with the policy's owner key id.
    Owner,
}

impl From<Peer> for Principal {
    fn from(peer: Peer) -> Principal {
        match peer {
            Peer::Key(key) => Principal::Key(key),
            Peer::Anonymous => Principal::Anonymous,
        }
    }
}

impl From<KeyId> for Principal {
    fn from(key: KeyId) -> Principal {
        Principal::Key(key)
    }
}

impl fmt::Display for Principal {
    /// `key:<key id>`, `anonymous` or `owner`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Key(key) => write!(f, "key:{key}"),
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Owner => f.write_str("owner"),
        }
    }
}

/// An entry in a group's member list, a grant list or a document's reader list.
///
/// Text form (in JSON documents, in explanations): `key:<52-character key id>`,
/// `group:<group name>`, or `anonymous`. A member `anonymous` matches **every** principal: any
/// client may choose to connect without a certificate, so what anonymous may do, everyone may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Member {
    /// Everyone (the principal without a key, and so every principal).
    Anonymous,
    /// The principal with this key id.
    Key(KeyId),
    /// Every member of this group, and of the groups in it, transitively.
    Group(GroupName),
}

impl Member {
    /// Parses a group member from its name, as `group:<name>`.
    pub fn group(name: &str) -> Result<Member> {
        Ok(Member::Group(GroupName::new(name)?))
    }
}

impl From<KeyId> for Member {
    fn from(key: KeyId) -> Member {
        Member::Key(key)
    }
}

impl From<GroupName> for Member {
    fn from(group: GroupName) -> Member {
        Member::Group(group)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Anonymous => f.write_str("anonymous"),
            Member::Key(key) => write!(f, "key:{key}"),
            Member::Group(group) => write!(f, "group:{group}"),
        }
    }
}

impl FromStr for Member {
    type Err = Error;

    fn from_str(s: &str) -> Result<Member> {
        if s == "anonymous" {
            Ok(Member::Anonymous)
        } else if let Some(key) = s.strip_prefix("key:") {
            let key = key
                .parse::<KeyId>()
                .map_err(|e| Error::invalid_member(s, e.to_string()))?;
            Ok(Member::Key(key))
        } else if let Some(group) = s.strip_prefix("group:") {
            let group =
                GroupName::new(group).map_err(|e| Error::invalid_member(s, e.to_string()))?;
            Ok(Member::Group(group))
        } else {
            Err(Error::invalid_member(
                s,
                "a member is \"key:<key id>\", \"group:<name>\" or \"anonymous\"",
            ))
        }
    }
}

impl serde::Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq";

    #[test]
    fn member_text_round_trips() {
        for text in ["anonymous", &format!("key:{KEY}"), "group:friends"] {
            let member: Member = text.parse().unwrap();
            assert_eq!(member.to_string(), text);
            let json = serde_json::to_string(&member).unwrap();
            assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), member);
        }
    }

    #[test]
    fn member_errors_say_why() {
        let cases = [
            ("", "a member is"),
            ("friends", "a member is"),
            ("Anonymous", "a member is"),
            ("key:abc", "exactly 52 characters"),
            ("group:Friends", "lowercase"),
            ("group:", "1 to 64 bytes"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Member>().unwrap_err();
            assert!(err.to_string().contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn principals_from_peers() {
        let key: KeyId = KEY.parse().unwrap();
        assert_eq!(Principal::from(Peer::Key(key)), Principal::Key(key));
        assert_eq!(Principal::from(Peer::Anonymous), Principal::Anonymous);
        assert_eq!(Principal::Key(key).to_string(), format!("key:{KEY}"));
    }
}
