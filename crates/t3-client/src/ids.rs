//! Identifier newtypes. T3 requires ids to be non-empty trimmed strings and its own clients use
//! UUIDs; afk generates every id on the client so that a retry can reuse it (T3 deduplicates by
//! `commandId`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid T3 id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id must be a non-empty string without surrounding whitespace, got {0:?}")]
pub struct InvalidId(pub String);

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
                if value.is_empty() || value.trim() != value {
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
    fn ids_must_be_non_empty_and_trimmed() {
        assert!(ThreadId::new("abc").is_ok());
        assert!(ThreadId::new("").is_err());
        assert!(ThreadId::new(" abc").is_err());
        assert!(serde_json::from_str::<ThreadId>("\"\"").is_err());
        assert_ne!(ThreadId::generate(), ThreadId::generate());
    }
}
