//! Identifier newtypes. T3 requires ids to be non-empty trimmed strings and its own clients use
//! UUIDs; afk generates every id on the client so that a retry can reuse it (T3 deduplicates by
//! `commandId`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid T3 id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id must be a non-empty string without surrounding whitespace, got {0:?}")]
pub struct InvalidId(pub String);

/// The hasher of the maps keyed by T3's ids (the fleet's threads and projects, the shell's waits):
/// foldhash, which hashes a UUID in a fraction of std's SipHash (SipHash was 3% of the fleet's
/// decode, BENCHMARKS.md "Typed decode against the floor"). SipHash's defence against HashDoS is
/// not needed for these keys: they are chosen by afk or by T3's other clients (`thread.create`'s
/// id is the client's), every one of them holding a token for the T3 that afk trusts with its
/// agents; and foldhash's `RandomState` still seeds each map from a per-process random value.
pub(crate) type IdHasher = foldhash::fast::RandomState;

/// A map keyed by T3 ids, with [`IdHasher`].
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasher>;

/// True when `text` is non-empty and trimmed (`text.trim() == text`), as T3's schema demands of
/// an id. The same answer as that comparison, without trimming when both ends are ASCII (a
/// snapshot decodes several ids per thread: see BENCHMARKS.md, "Typed decode against the floor").
pub(crate) fn is_trimmed_non_empty(text: &str) -> bool {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (None, _) | (_, None) => false,
        (Some(&first), Some(&last)) if first.is_ascii() && last.is_ascii() => {
            !is_ascii_white(first) && !is_ascii_white(last)
        }
        _ => text.trim() == text,
    }
}

/// An ASCII byte that `char::is_whitespace` (so `str::trim`) counts as white space: unlike
/// `u8::is_ascii_whitespace`, it includes the vertical tab.
pub(crate) fn is_ascii_white(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id (a UUID v4, as T3's own clients use).
            pub fn generate() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }

            /// Accepts `value` when it is non-empty and trimmed, as T3's schema demands.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                if !is_trimmed_non_empty(&value) {
                    return Err(InvalidId(value));
                }
                Ok(Self(value))
            }

            /// The id as T3 sends it.
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
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        // Hash and Eq derive from the one String field, so they agree with str's: maps keyed by
        // the id can be searched with a borrowed string.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        // So that a test or a log check can compare an id with the text it expects.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A T3 thread: one agent conversation, one attempt at an issue.
    ThreadId
);
id_type!(
    /// A T3 project: one repository's workspace.
    ProjectId
);
id_type!(
    /// A command sent to T3's dispatch endpoint; T3 keeps a receipt per command id.
    CommandId
);
id_type!(
    /// A message within a thread.
    MessageId
);
id_type!(
    /// One turn (a user message and the agent's work on it) within a thread.
    TurnId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_trimmed_exactly_when_str_trim_says_so() {
        for text in [
            "",
            "a",
            "abc",
            " a",
            "a ",
            "\ta",
            "a\n",
            "\u{b}a",
            "a\u{c}",
            "\ra",
            "\u{1}a",
            "a\u{7f}",
            "\u{85}a",
            "a\u{85}",
            "\u{a0}",
            "é",
            "aé",
            "éa",
            "a\u{3000}",
            "\u{2028}a",
            "a b",
        ] {
            let by_trim = !text.is_empty() && text.trim() == text;
            assert_eq!(is_trimmed_non_empty(text), by_trim, "{text:?}");
            assert_eq!(ThreadId::new(text).is_ok(), by_trim, "{text:?}");
        }
    }

    #[test]
    fn ids_must_be_non_empty_and_trimmed() {
        assert!(ThreadId::new("abc").is_ok());
        assert!(ThreadId::new("").is_err());
        assert!(ThreadId::new(" abc").is_err());
        assert!(serde_json::from_str::<ThreadId>("\"\"").is_err());
        assert_ne!(ThreadId::generate(), ThreadId::generate());
    }
}
