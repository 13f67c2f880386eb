//! Identifier newtypes. T3 requires ids to be non-empty trimmed strings and its own clients use
//! UUIDs; afk generates every id on the client so that a retry can reuse it (T3 deduplicates by
//! `commandId`).

use std::fmt;
use std::marker::PhantomData;

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

/// An id of kind `K` ([`ThreadId`], [`TurnId`], ...) borrowed from a text already checked as `K`
/// checks it (non-empty and trimmed): what a [`crate::wire::FleetThread`] hands out of the one
/// block of text it keeps, without allocating. `to_id` makes the `K`.
pub struct IdRef<'a, K> {
    text: &'a str,
    kind: PhantomData<fn() -> K>,
}

impl<'a, K> IdRef<'a, K> {
    /// `text`, which the caller has checked as `K` checks an id ([`is_trimmed_non_empty`]).
    pub(crate) fn of_checked(text: &'a str) -> Self {
        debug_assert!(
            is_trimmed_non_empty(text),
            "an id's text is checked before it is kept"
        );
        Self {
            text,
            kind: PhantomData,
        }
    }

    /// The id as T3 sends it.
    pub fn as_str(self) -> &'a str {
        self.text
    }
}

// By hand, not derived: a derive would demand the same of `K`, which only names the kind.
impl<K> Clone for IdRef<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for IdRef<'_, K> {}

impl<K> PartialEq for IdRef<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<K> Eq for IdRef<'_, K> {}

impl<K> PartialOrd for IdRef<'_, K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for IdRef<'_, K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(other.text)
    }
}

// As the owned id's (and `str`'s) hash, so that either can look up a map keyed by the other.
impl<K> std::hash::Hash for IdRef<'_, K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl<K> fmt::Display for IdRef<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

impl<K> PartialEq<str> for IdRef<'_, K> {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl<K> PartialEq<&str> for IdRef<'_, K> {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
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

        impl<'a> IdRef<'a, $name> {
            /// The owned id (one allocation). Not `to_owned`, which `Clone` makes an `IdRef`'s.
            pub fn to_id(self) -> $name {
                $name(self.text.to_owned())
            }
        }

        impl fmt::Debug for IdRef<'_, $name> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.text)
            }
        }

        impl PartialEq<$name> for IdRef<'_, $name> {
            fn eq(&self, other: &$name) -> bool {
                self.text == other.0
            }
        }

        impl PartialEq<IdRef<'_, $name>> for $name {
            fn eq(&self, other: &IdRef<'_, $name>) -> bool {
                self.0 == other.text
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

    /// A borrowed id hashes, compares and orders as its owned id and its text do, so that a map
    /// keyed by either (or by `str`) finds it, and sorting by it sorts as by the ids.
    #[test]
    fn a_borrowed_id_hashes_and_orders_as_the_owned_id() {
        use std::hash::BuildHasher;
        let hasher = IdHasher::default();
        let texts = ["a", "b", "ab", "é", "0f3c-11"];
        for a in texts {
            let owned = ThreadId::new(a).unwrap();
            let borrowed = IdRef::<ThreadId>::of_checked(a);
            assert_eq!(hasher.hash_one(borrowed), hasher.hash_one(&owned));
            assert_eq!(hasher.hash_one(borrowed), hasher.hash_one(a));
            assert_eq!(borrowed, owned);
            assert_eq!(owned, borrowed);
            assert_eq!(borrowed, a);
            assert_eq!(borrowed.to_id(), owned);
            for b in texts {
                let other = ThreadId::new(b).unwrap();
                assert_eq!(borrowed.cmp(&IdRef::of_checked(b)), owned.cmp(&other), "{a} {b}");
                assert_eq!(borrowed == other, a == b);
            }
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
