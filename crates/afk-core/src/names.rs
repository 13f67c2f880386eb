//! Enums stored and printed by name: states, job sources, cancel reasons.

/// A stored name afk does not know (a ledger written by a newer afk, or a hand edit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {name:?}")]
pub struct UnknownName {
    /// What the name was meant to be (`state`, `job source`, `cancel reason`).
    pub kind: &'static str,
    /// The name.
    pub name: String,
}

/// A state name afk does not know.
pub type UnknownState = UnknownName;

/// An enum of unit variants, each with the name afk prints and stores (also its serde name):
/// `ALL` in declaration order, `as_str`, and `FromStr` refusing other names as an [`UnknownName`]
/// of `kind`.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident ($kind:literal) {
        $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name afk stores (and prints, unless said otherwise).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::UnknownName {
                        kind: $kind,
                        name: other.to_owned(),
                    }),
                }
            }
        }
    };
}

/// `Display` as the stored name.
macro_rules! display_as_name {
    ($($name:ident),+) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}
