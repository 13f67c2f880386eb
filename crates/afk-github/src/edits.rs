//! Whether the text afk would hand an agent is text a trusted person has seen.
//!
//! The trusted `labeled` event vouches for the title and body as they were then. A change after
//! it is fine when its author is trusted too (they wrote what is there now) and disqualifies the
//! issue otherwise, until a trusted person applies the label again.
//!
//! Where each change is seen (see docs/github.md for why):
//! - **title**: the events, where GitHub records every change as `renamed` with its
//!   actor, in order with the `labeled` events (so "after the label" is exact);
//! - **body**: GraphQL's `lastEditedAt` and `editor` on the issue (REST records no event for a
//!   body edit). Timestamps have whole seconds, so an edit in the same second as the label counts
//!   as after it: when in doubt, the issue is not taken.
//!
//! The decision ([`edits_after_label`]) is pure; intake fetches its inputs.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::trust::{Login, Permission};

/// Which part of the text changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EditedField {
    /// The title (a `renamed` event).
    Title,
    /// The body.
    Body,
}

impl fmt::Display for EditedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EditedField::Title => "title",
            EditedField::Body => "body",
        })
    }
}

/// One change to the text: which part, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    /// The part changed.
    pub field: EditedField,
    /// Who changed it; `None` for an account since deleted (never trusted).
    pub editor: Option<Login>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The trusted `labeled` event that handed the issue to afk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedLabel {
    /// The trigger label's name.
    pub label: String,
    /// Who applied it (trusted).
    pub by: Login,
    /// When; `None` when GitHub did not say (every body edit then counts as after it).
    pub at: Option<DateTime<Utc>>,
}

/// The text changed after the trusted label, by someone without write access: afk must
/// not take the current text. A trusted person re-applying the label vouches for it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedEdit {
    /// The change.
    pub edit: TextEdit,
    /// The editor's permission on the repository.
    pub permission: Permission,
    /// The label it came after.
    pub label: TrustedLabel,
}

impl fmt::Display for UntrustedEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let editor = match &self.edit.editor {
            Some(login) => format!("{login}, whose permission is {}", self.permission),
            None => "a deleted account".to_owned(),
        };
        write!(
            f,
            "its {} was changed by {editor}, after {} applied the `{}` label; afk takes only text \
             that someone with write access has seen: to hand over the current text, a person \
             with write access removes and re-applies the label",
            self.edit.field, self.label.by, self.label.label
        )
    }
}

/// The changes to check for trust: the **last** change of the title and of the body, each only
/// when it came after the label. An earlier change overwritten by a later one does not matter:
/// the later author wrote what is there now.
///
/// `renames` are the issue's `renamed` events with their position in the event list, and
/// `label_position` the trusted `labeled` event's position there (events are in order).
pub fn edits_after_label(
    label_position: usize,
    label_at: Option<DateTime<Utc>>,
    renames: &[(usize, TextEdit)],
    last_body_edit: Option<&TextEdit>,
) -> Vec<TextEdit> {
    let mut out = Vec::new();
    if let Some((position, rename)) = renames.iter().max_by_key(|(position, _)| *position) {
        if *position > label_position {
            out.push(rename.clone());
        }
    }
    if let Some(edit) = last_body_edit {
        // Whole-second timestamps: the same second as the label counts as after it.
        if label_at.is_none_or(|label_at| edit.at >= label_at) {
            out.push(edit.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn edit(field: EditedField, who: &str, s: i64) -> TextEdit {
        TextEdit {
            field,
            editor: Some(Login::new(who)),
            at: at(s),
        }
    }

    /// (case, label position, label time, renames, last body edit, expected).
    type Case = (
        &'static str,
        usize,
        Option<i64>,
        Vec<(usize, TextEdit)>,
        Option<TextEdit>,
        Vec<TextEdit>,
    );

    #[test]
    fn only_the_last_change_of_each_part_after_the_label_is_checked() {
        use EditedField::*;
        let title = |who, s| edit(Title, who, s);
        let body = |who, s| edit(Body, who, s);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("never edited", 3, Some(10), vec![], None, vec![]),
            ("edited before the label", 3, Some(10), vec![(1, title("a", 5))], Some(body("a", 9)), vec![]),
            ("renamed after the label", 3, Some(10), vec![(1, title("a", 5)), (4, title("b", 10))], None,
                vec![title("b", 10)]),
            ("the last rename counts, not an earlier one", 3, Some(10),
                vec![(4, title("b", 11)), (6, title("c", 12))], None, vec![title("c", 12)]),
            ("a rename before a relabel is covered by the relabel", 5, Some(20), vec![(4, title("b", 20))], None,
                vec![]),
            ("a body edit after the label", 3, Some(10), vec![], Some(body("b", 11)), vec![body("b", 11)]),
            ("a body edit in the label's second counts as after it", 3, Some(10), vec![], Some(body("b", 10)),
                vec![body("b", 10)]),
            ("without the label's time every body edit counts", 3, None, vec![], Some(body("b", 1)),
                vec![body("b", 1)]),
            ("both parts changed", 3, Some(10), vec![(7, title("b", 12))], Some(body("c", 13)),
                vec![title("b", 12), body("c", 13)]),
        ];
        for (case, position, label_at, renames, body_edit, expected) in cases {
            let got = edits_after_label(position, label_at.map(at), &renames, body_edit.as_ref());
            assert_eq!(got, expected, "{case}");
        }
    }
}
