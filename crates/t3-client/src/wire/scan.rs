//! A reader written for T3's thread shape: the watcher's hot decodes (the snapshot into the
//! fleet, the shell, the shell stream's `snapshot` item) and the full read model
//! ([`super::ReadModel::decode`], what `T3Client::snapshot` returns to `afk t3` and `afk doctor`)
//! read by a byte scanner over the body instead of `serde_json`'s derived visitors.
//!
//! It is a shortcut, never an answer of its own: each entry point gives `Some` only for a
//! document that the `serde` path ([`super::view`]'s strict decode for the watcher's decodes,
//! [`super::ReadModel`]'s own `Deserialize` for [`read_model`]) reads whole, and then exactly
//! what that path gives; for anything it is not sure of it gives `None` (it *declines*) and the
//! caller runs the `serde` path, which then accepts, sets aside or refuses as it always has, with
//! its own errors. So the scanner may be stricter than `serde_json` (it declines where in doubt),
//! never looser. It declines on:
//!
//! - any thread the `serde` path would set aside (a wrong type, an unknown state, a bad
//!   timestamp, a missing key, a key listed twice): the `serde` path then sets it aside with its
//!   reason;
//! - any escape it does not fully understand (a `\u` surrogate that is not a valid pair, an
//!   unknown escape), a control character in a string, a key written with escapes;
//! - numbers with more than 18 digits in either part or more than two in the exponent (where
//!   `serde_json`'s `Value` and `IgnoredAny` differ on what they accept; a `u64` field, the
//!   sequence, declines any fraction or exponent), nesting deeper than [`MAX_DEPTH`] (well
//!   under `serde_json`'s 128, so the projects, decoded by `serde_json` on their own, are read as
//!   they are in place), a struct written as an array, trailing text.
//!
//! Why: ~65% of the typed decode's instructions were `serde_json`'s string scanning and per-key
//! matching (BENCHMARKS.md, "Typed decode against the floor"). Here keys are matched as byte
//! slices, strings are found with a word-at-a-time scan and borrowed (no per-key allocation), and
//! values afk does not keep are checked as the wire types check them without being built.
//! `tests/fuzz.rs` holds the scanner and the `serde` path side by side on mutated real-shaped
//! documents and on random bytes.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

use super::read_model::{is_timestamp, parse_timestamp};
use super::{
    FleetThread, FleetTurn, InteractionMode, LatestTurn, ModelSelection, NonEmptyString, Project, ReadModel,
    RuntimeMode, Session, SessionStatus, Thread, ThreadFacts, Timestamp, TurnState,
};
use crate::ids::{is_trimmed_non_empty, IdRef, MessageId, ProjectId, ThreadId, TurnId};

/// A key as T3 writes it, `"name":`, for [`Scan::object_keyed`]'s tables.
macro_rules! written {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// Deepest nesting the scanner reads (the document itself is depth 1); deeper, it declines.
const MAX_DEPTH: u32 = 64;

/// Which thread type's keys and checks apply: the snapshot's [`super::Thread`] or the shell's
/// [`super::ThreadShell`] (`view::SnapshotThread` / `view::ShellThread`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Snapshot,
    Shell,
}

/// A document's sequence and projects, as its `serde` decode gives them.
pub(super) struct Doc<P> {
    pub(super) sequence: u64,
    pub(super) projects: Vec<P>,
    /// The document's `updatedAt`.
    pub(super) updated_at: Timestamp,
}

/// Reads a snapshot or shell document (`{"snapshotSequence", "projects", "threads",
/// "updatedAt"}`), handing each thread to `each` in order; `None` to decline (see the module).
/// `P` is the projects' wire type ([`super::Project`] or [`super::ProjectShell`]).
pub(super) fn document<'a, P: DeserializeOwned>(
    text: &'a str,
    shape: Shape,
    each: impl FnMut(ThreadRead<'a>) -> Option<()>,
) -> Option<Doc<P>> {
    let mut scan = Scan::new(text);
    let mut each = each;
    let doc = scan.document(|scan| each(scan.thread(shape)?))?;
    scan.end()?;
    Some(doc)
}

/// Reads a snapshot document (`GET /api/orchestration/snapshot`) whole into afk's full
/// [`ReadModel`]: exactly what `serde_json::from_str::<ReadModel>` gives of `text`, or `None` to
/// decline (see the module; the caller then runs `serde`). Each thread's texts are copied out of
/// the document once, into the thread's own `String`s; its `messages`, `activities` and
/// `checkpoints` (empty in the snapshot) are handed to `serde` when they are not.
pub(super) fn read_model(text: &str) -> Option<ReadModel> {
    let mut scan = Scan::new(text);
    // Sized from the document, not grown: a JSON array does not say its length, and growing a
    // vector of half-kilobyte threads copies it (or remaps it) at each doubling. T3 writes a
    // thread in more than `THREAD_BYTES` (about 950 bytes as T3 0.0.33 writes one), so this
    // over-reserves; the unused tail is given back below, without a copy (the pages a vector
    // never wrote were never mapped in).
    const THREAD_BYTES: usize = 512;
    let mut threads = Vec::with_capacity(text.len() / THREAD_BYTES);
    let doc = scan.document::<Project>(|scan| {
        threads.push(scan.full_thread()?);
        Some(())
    })?;
    scan.end()?;
    threads.shrink_to_fit();
    Some(ReadModel {
        snapshot_sequence: doc.sequence,
        projects: doc.projects,
        threads,
        updated_at: doc.updated_at,
    })
}

/// Reads a shell stream item written `{"kind":"snapshot","snapshot":<shell document>}` (the two
/// keys in that order, no other), as [`document`] reads the document; `None` to decline.
pub(super) fn stream_snapshot<'a, P: DeserializeOwned>(
    text: &'a str,
    each: impl FnMut(ThreadRead<'a>) -> Option<()>,
) -> Option<Doc<P>> {
    let mut scan = Scan::new(text);
    scan.open(b'{')?;
    if scan.key()? != "kind" || scan.string()? != "snapshot" {
        return None;
    }
    scan.next_in(b'}')?.then_some(())?;
    if scan.key()? != "snapshot" {
        return None;
    }
    let mut each = each;
    let doc = scan.document(|scan| each(scan.thread(Shape::Shell)?))?;
    (!scan.next_in(b'}')?).then_some(())?;
    scan.end()?;
    Some(doc)
}

/// Whether a stream item starts with its `kind` key (`{"kind":`), as [`stream_snapshot`] and the
/// one-pass decode of a `snapshot` item both require: `false` also for an item the scanner cannot
/// tell (an escaped key, text that is not an object).
pub(super) fn starts_with_kind(text: &str) -> bool {
    let mut scan = Scan::new(text);
    scan.open(b'{').is_some() && scan.key() == Some("kind")
}

/// Keys already read in one object, one bit each: a key listed twice is a `serde` error
/// ("duplicate field"), so the scanner declines.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn first(&mut self, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }

    fn all(&self, required: u32) -> Option<()> {
        (self.0 & required == required).then_some(())
    }
}

struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    // ---- tokens -------------------------------------------------------------------------------

    /// The next byte that is not JSON white space (`serde_json`'s four), not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.at += 1)
    }

    /// Only white space left.
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// Opens an object or an array (`open` is `{` or `[`), one level deeper.
    #[inline]
    fn open(&mut self, open: u8) -> Option<()> {
        self.eat(open)?;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// After an object's or array's opening: `true` when it has a first member (`close` not next;
    /// the member is then read by the caller), `false` when it is empty (closed here).
    #[inline]
    fn first_in(&mut self, close: u8) -> Option<bool> {
        if self.peek()? == close {
            self.at += 1;
            self.depth -= 1;
            Some(false)
        } else {
            Some(true)
        }
    }

    /// After a member: `true` when another follows (`,` read), `false` at `close` (read).
    #[inline]
    fn next_in(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            b if b == close => {
                self.at += 1;
                self.depth -= 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// An object's key and its `:`; a key written with escapes declines (`serde` would match its
    /// unescaped text).
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        let (key, escaped) = self.raw_string()?;
        if escaped {
            return None;
        }
        self.eat(b':')?;
        Some(key)
    }

    /// Reads each member of an object with `member(scan, key)`.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.open(b'{')?;
        if self.first_in(b'}')? {
            loop {
                let key = self.key()?;
                member(self, key)?;
                if !self.next_in(b'}')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// Reads each member of an object whose keys afk knows, `keys` (each key as T3 writes it,
    /// [`written!`], and what it means) in the order T3 writes them: `member(scan, key)` for each
    /// known key, any other key's value checked and skipped. T3 writes its keys in a fixed order
    /// and without white space, so the key after the last one matched is tried first, as bytes in
    /// place (`"name":`, no scan of the string, no match on its text); any other key, or an order
    /// or spacing other than T3's, takes the general path ([`Self::key`] and a look-up in `keys`),
    /// with the same answer.
    fn object_keyed<K: Copy>(
        &mut self,
        keys: &[(&str, K)],
        mut member: impl FnMut(&mut Self, K) -> Option<()>,
    ) -> Option<()> {
        self.open(b'{')?;
        if self.first_in(b'}')? {
            let mut next = 0;
            loop {
                let found = match keys.get(next) {
                    Some(&(written, key)) if self.written_key(written) => Some((next, key)),
                    _ => {
                        let text = self.key()?;
                        keys.iter()
                            .position(|&(written, _)| name_of(written) == text)
                            .map(|at| (at, keys[at].1))
                    }
                };
                match found {
                    Some((at, key)) => {
                        member(self, key)?;
                        next = at + 1;
                    }
                    None => self.skip_value()?,
                }
                if !self.next_in(b'}')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// Whether the next key is written exactly `written` (`"name":`, the name without escapes),
    /// read if so; if not, only the white space before it is read. Such a key is what [`Self::key`] reads as `name`: the
    /// quote right after the name's bytes ends the string there, as a name holds no `"`, `\` or
    /// control character.
    #[inline]
    fn written_key(&mut self, written: &str) -> bool {
        if self.peek() != Some(b'"') || !starts_with(&self.bytes[self.at..], written.as_bytes()) {
            return false;
        }
        self.at += written.len();
        true
    }

    /// Reads each item of an array with `item(scan)`.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.open(b'[')?;
        if self.first_in(b']')? {
            loop {
                item(self)?;
                if !self.next_in(b']')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// `null` (consumed: `true`) or something else (not consumed: `false`).
    #[inline]
    fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null")?;
        Some(true)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn bool(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A `u64` as `serde_json` reads one: digits without a leading zero, no sign, no fraction or
    /// exponent, within range.
    fn u64(&mut self) -> Option<u64> {
        self.peek()?;
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(&b) = self.bytes.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        match self.bytes.get(self.at) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(value),
        }
    }

    /// A number of any kind, checked and skipped (see the module for what declines).
    fn skip_number(&mut self) -> Option<()> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let digits = self.digits()?;
        if digits > 1 && self.bytes[self.at - digits] == b'0' {
            return None;
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.exponent()?;
        }
        Some(())
    }

    /// A number's exponent after its `e`/`E` (an optional sign, then one or two digits); three
    /// digits or more decline. Why two: with at most 18 digits on either side of the point, the
    /// number is then within 1e-117 to 1e117, so `serde_json` reads it as a finite `f64` (a
    /// `Value`) exactly as it skips it (`IgnoredAny`); with more, `Value` can refuse what
    /// `IgnoredAny` accepts ("number out of range").
    fn exponent(&mut self) -> Option<()> {
        self.at += 1;
        if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
            self.at += 1;
        }
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        (1..=2).contains(&(self.at - start)).then_some(())
    }

    /// One to 18 digits.
    fn digits(&mut self) -> Option<usize> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let n = self.at - start;
        (1..=18).contains(&n).then_some(n)
    }

    // ---- strings ------------------------------------------------------------------------------

    /// A string's raw text (between its quotes, escapes as written) and whether it has escapes.
    /// Its escapes are checked as `serde_json` checks a string it hands out (known escapes, `\u`
    /// surrogates paired); a control character, or an escape the scanner is not sure of, declines.
    #[inline]
    fn raw_string(&mut self) -> Option<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at = start_of_special(self.bytes, self.at);
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    self.escape()?;
                }
                _ => return None, // A control character: `serde_json` refuses it.
            }
        }
        let raw = self.text.get(start..self.at)?;
        self.at += 1;
        Some((raw, escaped))
    }

    /// One escape after its `\`; `\u` surrogates only as a valid pair.
    fn escape(&mut self) -> Option<()> {
        match *self.bytes.get(self.at)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.at += 1;
                Some(())
            }
            b'u' => {
                self.at += 1;
                let n = self.hex4()?;
                match n {
                    0xD800..=0xDBFF => {
                        self.literal(b"\\u")?;
                        (0xDC00..=0xDFFF).contains(&self.hex4()?).then_some(())
                    }
                    0xDC00..=0xDFFF => None,
                    _ => Some(()),
                }
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.at += 4;
        Some(n)
    }

    /// A string's text, unescaped (borrowed when it has no escapes).
    #[inline]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (raw, escaped) = self.raw_string()?;
        if escaped {
            unescape(raw).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(raw))
        }
    }

    // ---- values afk checks but does not keep ----------------------------------------------------

    /// Any JSON value, checked as a [`serde_json::Value`] would be and skipped (see the module for
    /// what declines).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.raw_string().map(drop),
            b'{' => self.open(b'{').and_then(|()| self.skip_members()),
            b'[' => self.array(Self::skip_value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    /// An object's members after its `{`: keys of any text (checked as strings are), any values.
    fn skip_members(&mut self) -> Option<()> {
        if self.first_in(b'}')? {
            loop {
                self.raw_string()?;
                self.eat(b':')?;
                self.skip_value()?;
                if !self.next_in(b'}')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// An id's text, checked as the id types check it, not kept (`view::IdText`).
    fn id_text(&mut self) -> Option<()> {
        is_trimmed_non_empty(&self.string()?).then_some(())
    }

    /// An id's text, checked as the id types check it ([`ThreadId::new`] and the others),
    /// borrowed.
    fn id(&mut self) -> Option<Cow<'a, str>> {
        let text = self.string()?;
        is_trimmed_non_empty(&text).then_some(text)
    }

    /// Any string, not kept (`view::Text`).
    fn text(&mut self) -> Option<()> {
        self.raw_string().map(drop)
    }

    /// `null` or a string (borrowed).
    fn nullable_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null()? {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A timestamp checked as `read_model::CheckedTimestamp` checks it.
    fn checked_timestamp(&mut self) -> Option<()> {
        is_timestamp(&self.string()?).then_some(())
    }

    /// `null` or a checked timestamp (`Option<CheckedTimestamp>`).
    fn nullable_checked_timestamp(&mut self) -> Option<()> {
        if self.null()? {
            return Some(());
        }
        self.checked_timestamp()
    }

    fn timestamp(&mut self) -> Option<Timestamp> {
        parse_timestamp(&self.string()?)
    }

    fn nullable_timestamp(&mut self) -> Option<Option<Timestamp>> {
        if self.null()? {
            return Some(None);
        }
        self.timestamp().map(Some)
    }

    /// One of `names` (a unit enum's variants as T3 writes them): its index.
    fn variant(&mut self, names: &[&str]) -> Option<usize> {
        let text = self.string()?;
        names.iter().position(|n| *n == text)
    }

    /// A runtime mode, checked ([`Self::runtime_mode_kept`]), not kept.
    fn runtime_mode(&mut self) -> Option<()> {
        self.runtime_mode_kept().map(drop)
    }

    /// A runtime mode as [`RuntimeMode`]'s `Deserialize` reads it.
    fn runtime_mode_kept(&mut self) -> Option<RuntimeMode> {
        const MODES: [RuntimeMode; 4] = [
            RuntimeMode::ApprovalRequired,
            RuntimeMode::AutoAcceptEdits,
            RuntimeMode::Auto,
            RuntimeMode::FullAccess,
        ];
        Some(MODES[self.variant(&["approval-required", "auto-accept-edits", "auto", "full-access"])?])
    }

    /// An interaction mode as [`InteractionMode`]'s `Deserialize` reads it.
    fn interaction_mode_kept(&mut self) -> Option<InteractionMode> {
        const MODES: [InteractionMode; 2] = [InteractionMode::Default, InteractionMode::Plan];
        Some(MODES[self.variant(&["default", "plan"])?])
    }

    fn bare_array(&mut self) -> Option<()> {
        if self.peek()? != b'[' {
            return None;
        }
        self.array(Self::skip_value)
    }

    // ---- T3's shapes ----------------------------------------------------------------------------

    /// A document's members, each thread read by `thread` (which reads one whole thread and hands
    /// it on).
    fn document<P: DeserializeOwned>(
        &mut self,
        mut thread: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<Doc<P>> {
        let mut seen = Seen::default();
        let mut sequence = 0;
        let mut projects = None;
        let mut updated_at = None;
        self.object(|scan, key| {
            match key {
                "snapshotSequence" => {
                    seen.first(0)?;
                    sequence = scan.u64()?;
                }
                "projects" => {
                    seen.first(1)?;
                    // Few, and of many shapes: decoded by their own wire type, from their text.
                    scan.peek()?;
                    let start = scan.at;
                    scan.bare_array()?;
                    projects = Some(serde_json::from_str::<Vec<P>>(&scan.text[start..scan.at]).ok()?);
                }
                "threads" => {
                    seen.first(2)?;
                    if scan.peek()? != b'[' {
                        return None;
                    }
                    scan.array(&mut thread)?;
                }
                "updatedAt" => {
                    seen.first(3)?;
                    updated_at = Some(scan.timestamp()?);
                }
                _ => scan.skip_value()?,
            }
            Some(())
        })?;
        seen.all(0b1111)?;
        Some(Doc {
            sequence,
            projects: projects?,
            updated_at: updated_at?,
        })
    }

    /// One thread with the checks of `view::SnapshotThread` or `view::ShellThread`, its texts
    /// borrowed.
    fn thread(&mut self, shape: Shape) -> Option<ThreadRead<'a>> {
        let keys: &[(&str, ThreadKey)] = match shape {
            Shape::Snapshot => &SNAPSHOT_THREAD_KEYS,
            Shape::Shell => &SHELL_THREAD_KEYS,
        };
        let mut seen = Seen::default();
        let mut id = None;
        let mut branch = None;
        let mut worktree_path = None;
        let mut latest_turn = None;
        let mut updated_at = None;
        let mut deleted_at = None;
        let mut session = None;
        let mut has_pending_user_input = false;
        let mut has_pending_approvals = false;
        self.object_keyed(keys, |scan, key| {
            if let ThreadKey::Other = key {
                // A key of T3's that afk does not read: checked and skipped as any unknown key
                // is (and, as for one, listing it twice is no error).
                return scan.skip_value();
            }
            seen.first(key as u32)?;
            match key {
                ThreadKey::Id => id = Some(scan.id()?),
                ThreadKey::ProjectId => scan.id_text()?,
                ThreadKey::Title => scan.text()?,
                ThreadKey::ModelSelection => scan.model_selection()?,
                ThreadKey::RuntimeMode => scan.runtime_mode()?,
                ThreadKey::InteractionMode => scan.interaction_mode_kept().map(drop)?,
                ThreadKey::Branch => branch = scan.nullable_string()?,
                ThreadKey::WorktreePath => worktree_path = scan.nullable_string()?,
                ThreadKey::LatestTurn => {
                    latest_turn = if scan.null()? {
                        None
                    } else {
                        Some(scan.latest_turn()?)
                    };
                }
                ThreadKey::CreatedAt => scan.checked_timestamp()?,
                ThreadKey::UpdatedAt => updated_at = Some(scan.timestamp()?),
                ThreadKey::ArchivedAt | ThreadKey::LatestUserMessageAt => {
                    scan.nullable_checked_timestamp()?;
                }
                ThreadKey::Session => {
                    session = if scan.null()? { None } else { Some(scan.session()?) };
                }
                ThreadKey::HasPendingUserInput => has_pending_user_input = scan.bool()?,
                ThreadKey::HasPendingApprovals => has_pending_approvals = scan.bool()?,
                ThreadKey::HasActionableProposedPlan => scan.bool().map(drop)?,
                ThreadKey::DeletedAt => deleted_at = scan.nullable_timestamp()?,
                ThreadKey::Messages | ThreadKey::Activities | ThreadKey::Checkpoints => {
                    scan.bare_array()?;
                }
                ThreadKey::Other => unreachable!("skipped above"),
            }
            Some(())
        })?;
        seen.all(ThreadKey::required(shape))?;
        Some(ThreadRead {
            id: id?,
            branch,
            worktree_path,
            latest_turn,
            updated_at: updated_at?,
            deleted_at,
            session,
            has_pending_user_input,
            has_pending_approvals,
        })
    }

    /// `view::ModelCheck`.
    fn model_selection(&mut self) -> Option<()> {
        let mut seen = Seen::default();
        let non_empty = |scan: &mut Self| (!scan.string()?.trim().is_empty()).then_some(());
        self.object_keyed(&MODEL_KEYS, |scan, key| {
            seen.first(key as u32)?;
            match key {
                ModelKey::InstanceId | ModelKey::Model => non_empty(scan),
                ModelKey::Options => scan.skip_value(),
            }
        })?;
        seen.all(ModelKey::REQUIRED)
    }

    /// [`super::LatestTurn`], its ids borrowed.
    fn latest_turn(&mut self) -> Option<TurnRead<'a>> {
        let mut seen = Seen::default();
        let mut turn_id = None;
        let mut state = None;
        let mut requested_at = None;
        let mut started_at = None;
        let mut completed_at = None;
        let mut assistant_message_id = None;
        self.object_keyed(&TURN_KEYS, |scan, key| {
            seen.first(key as u32)?;
            match key {
                TurnKey::TurnId => turn_id = Some(scan.id()?),
                TurnKey::State => {
                    const STATES: [TurnState; 4] = [
                        TurnState::Running,
                        TurnState::Interrupted,
                        TurnState::Completed,
                        TurnState::Error,
                    ];
                    state = Some(STATES[scan.variant(&["running", "interrupted", "completed", "error"])?]);
                }
                TurnKey::RequestedAt => requested_at = Some(scan.timestamp()?),
                TurnKey::StartedAt => started_at = scan.nullable_timestamp()?,
                TurnKey::CompletedAt => completed_at = scan.nullable_timestamp()?,
                TurnKey::AssistantMessageId => {
                    assistant_message_id = if scan.null()? { None } else { Some(scan.id()?) };
                }
            }
            Some(())
        })?;
        seen.all(TurnKey::REQUIRED)?;
        Some(TurnRead {
            turn_id: turn_id?,
            state: state?,
            requested_at: requested_at?,
            started_at,
            completed_at,
            assistant_message_id,
        })
    }

    /// `view::SessionRaw`, its status and error kept (its error borrowed).
    fn session(&mut self) -> Option<SessionRead<'a>> {
        let mut seen = Seen::default();
        let mut status = None;
        let mut last_error = None;
        self.object_keyed(&SESSION_KEYS, |scan, key| {
            if let SessionKey::Other = key {
                return scan.skip_value();
            }
            seen.first(key as u32)?;
            match key {
                SessionKey::ThreadId => scan.id_text()?,
                SessionKey::Status => status = Some(scan.session_status()?),
                SessionKey::ProviderName => {
                    if !scan.null()? {
                        scan.text()?;
                    }
                }
                SessionKey::RuntimeMode => scan.runtime_mode()?,
                SessionKey::ActiveTurnId => {
                    if !scan.null()? {
                        scan.id_text()?;
                    }
                }
                SessionKey::LastError => last_error = scan.nullable_string()?,
                SessionKey::UpdatedAt => scan.checked_timestamp()?,
                SessionKey::Other => unreachable!("skipped above"),
            }
            Some(())
        })?;
        seen.all(SessionKey::REQUIRED)?;
        Some(SessionRead {
            status: status?,
            last_error,
        })
    }

    /// A session's `status`.
    fn session_status(&mut self) -> Option<SessionStatus> {
        const STATUSES: [SessionStatus; 7] = [
            SessionStatus::Idle,
            SessionStatus::Starting,
            SessionStatus::Running,
            SessionStatus::Ready,
            SessionStatus::Interrupted,
            SessionStatus::Stopped,
            SessionStatus::Error,
        ];
        let names = [
            "idle",
            "starting",
            "running",
            "ready",
            "interrupted",
            "stopped",
            "error",
        ];
        Some(STATUSES[self.variant(&names)?])
    }

    // ---- afk's full read model (`T3Client::snapshot`) ------------------------------------------

    /// `null` or an id's text, checked as the id types check it, borrowed.
    fn nullable_id(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null()? {
            return Some(None);
        }
        self.id().map(Some)
    }

    /// `null` or a string, owned.
    fn nullable_owned_string(&mut self) -> Option<Option<String>> {
        Some(self.nullable_string()?.map(Cow::into_owned))
    }

    /// A value afk keeps as `serde_json` builds it (a thread detail's messages, a model's
    /// options): checked and skipped in place, then built by `serde_json` from its text (as
    /// `serde` would build it in place; the projects are read the same way).
    fn value<T: DeserializeOwned>(&mut self) -> Option<T> {
        self.peek()?;
        let start = self.at;
        self.skip_value()?;
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    /// A `Vec` that `serde` defaults to empty: `[]` without building anything (the snapshot's
    /// `messages`, `activities`, `checkpoints`), else built by `serde_json` from its text.
    fn array_value<T: DeserializeOwned>(&mut self) -> Option<Vec<T>> {
        if self.peek()? != b'[' {
            return None;
        }
        if self.bytes.get(self.at + 1) == Some(&b']') {
            self.at += 2;
            return Some(Vec::new());
        }
        self.value()
    }

    /// One of a snapshot's threads as [`Thread`]'s `Deserialize` reads it (see the module for
    /// where this declines instead).
    fn full_thread(&mut self) -> Option<Thread> {
        let mut seen = Seen::default();
        let mut id = None;
        let mut project_id = None;
        let mut title = None;
        let mut model_selection = None;
        let mut runtime_mode = None;
        let mut interaction_mode = None;
        let mut branch = None;
        let mut worktree_path = None;
        let mut latest_turn = None;
        let mut created_at = None;
        let mut updated_at = None;
        let mut archived_at = None;
        let mut deleted_at = None;
        let mut messages = Vec::new();
        let mut activities = Vec::new();
        let mut checkpoints = Vec::new();
        let mut session = None;
        let mut has_pending_user_input = false;
        let mut has_pending_approvals = false;
        self.object_keyed(&SNAPSHOT_THREAD_KEYS, |scan, key| {
            // Keys `Thread` does not have (T3's others; the shell's own, should a snapshot carry
            // them): checked and skipped, as `serde` ignores them, listed twice or not.
            if let ThreadKey::Other | ThreadKey::LatestUserMessageAt | ThreadKey::HasActionableProposedPlan =
                key
            {
                return scan.skip_value();
            }
            seen.first(key as u32)?;
            match key {
                ThreadKey::Id => id = Some(scan.id()?),
                ThreadKey::ProjectId => project_id = Some(scan.id()?),
                ThreadKey::Title => title = Some(scan.string()?.into_owned()),
                ThreadKey::ModelSelection => model_selection = Some(scan.full_model_selection()?),
                ThreadKey::RuntimeMode => runtime_mode = Some(scan.runtime_mode_kept()?),
                ThreadKey::InteractionMode => interaction_mode = Some(scan.interaction_mode_kept()?),
                ThreadKey::Branch => branch = Some(scan.nullable_owned_string()?),
                ThreadKey::WorktreePath => worktree_path = Some(scan.nullable_owned_string()?),
                ThreadKey::LatestTurn => {
                    latest_turn = Some(if scan.null()? {
                        None
                    } else {
                        Some(scan.full_latest_turn()?)
                    });
                }
                ThreadKey::CreatedAt => created_at = Some(scan.timestamp()?),
                ThreadKey::UpdatedAt => updated_at = Some(scan.timestamp()?),
                ThreadKey::ArchivedAt => archived_at = scan.nullable_timestamp()?,
                ThreadKey::DeletedAt => deleted_at = Some(scan.nullable_timestamp()?),
                ThreadKey::Messages => messages = scan.array_value()?,
                ThreadKey::Activities => activities = scan.array_value()?,
                ThreadKey::Checkpoints => checkpoints = scan.array_value()?,
                ThreadKey::Session => {
                    session = Some(if scan.null()? {
                        None
                    } else {
                        Some(scan.full_session()?)
                    });
                }
                ThreadKey::HasPendingUserInput => has_pending_user_input = scan.bool()?,
                ThreadKey::HasPendingApprovals => has_pending_approvals = scan.bool()?,
                ThreadKey::LatestUserMessageAt | ThreadKey::HasActionableProposedPlan | ThreadKey::Other => {
                    unreachable!("skipped above")
                }
            }
            Some(())
        })?;
        seen.all(ThreadKey::required(Shape::Snapshot))?;
        Some(Thread {
            id: IdRef::<ThreadId>::of_checked(&id?).to_id(),
            project_id: IdRef::<ProjectId>::of_checked(&project_id?).to_id(),
            title: title?,
            model_selection: model_selection?,
            runtime_mode: runtime_mode?,
            interaction_mode: interaction_mode?,
            branch: branch?,
            worktree_path: worktree_path?,
            latest_turn: latest_turn?,
            created_at: created_at?,
            updated_at: updated_at?,
            archived_at,
            deleted_at: deleted_at?,
            messages,
            activities,
            checkpoints,
            session: session?,
            has_pending_user_input,
            has_pending_approvals,
        })
    }

    /// [`ModelSelection`] as its `Deserialize` reads it: the two names trimmed.
    fn full_model_selection(&mut self) -> Option<ModelSelection> {
        let mut seen = Seen::default();
        let mut instance_id = None;
        let mut model = None;
        let mut options = None;
        let non_empty = |scan: &mut Self| {
            let text = scan.string()?;
            // Trimmed already, as T3 writes names: kept as read (`str::trim` walks both ends by
            // characters, and did so twice a name).
            if is_trimmed_non_empty(&text) {
                Some(NonEmptyString(text.into_owned()))
            } else {
                NonEmptyString::new(text.trim())
            }
        };
        self.object_keyed(&MODEL_KEYS, |scan, key| {
            seen.first(key as u32)?;
            match key {
                ModelKey::InstanceId => instance_id = Some(non_empty(scan)?),
                ModelKey::Model => model = Some(non_empty(scan)?),
                ModelKey::Options => options = scan.value::<Option<serde_json::Value>>()?,
            }
            Some(())
        })?;
        seen.all(ModelKey::REQUIRED)?;
        Some(ModelSelection {
            instance_id: instance_id?,
            model: model?,
            options,
        })
    }

    /// [`LatestTurn`], its ids owned.
    fn full_latest_turn(&mut self) -> Option<LatestTurn> {
        let turn = self.latest_turn()?;
        Some(LatestTurn {
            turn_id: IdRef::<TurnId>::of_checked(&turn.turn_id).to_id(),
            state: turn.state,
            requested_at: turn.requested_at,
            started_at: turn.started_at,
            completed_at: turn.completed_at,
            assistant_message_id: turn
                .assistant_message_id
                .map(|id| IdRef::<MessageId>::of_checked(&id).to_id()),
        })
    }

    /// [`Session`] as its `Deserialize` reads it.
    fn full_session(&mut self) -> Option<Session> {
        let mut seen = Seen::default();
        let mut thread_id = None;
        let mut status = None;
        let mut provider_name = None;
        let mut runtime_mode = None;
        let mut active_turn_id = None;
        let mut last_error = None;
        let mut updated_at = None;
        self.object_keyed(&SESSION_KEYS, |scan, key| {
            if let SessionKey::Other = key {
                return scan.skip_value();
            }
            seen.first(key as u32)?;
            match key {
                SessionKey::ThreadId => thread_id = Some(scan.id()?),
                SessionKey::Status => status = Some(scan.session_status()?),
                SessionKey::ProviderName => provider_name = Some(scan.nullable_owned_string()?),
                SessionKey::RuntimeMode => runtime_mode = Some(scan.runtime_mode_kept()?),
                SessionKey::ActiveTurnId => active_turn_id = Some(scan.nullable_id()?),
                SessionKey::LastError => last_error = Some(scan.nullable_owned_string()?),
                SessionKey::UpdatedAt => updated_at = Some(scan.timestamp()?),
                SessionKey::Other => unreachable!("skipped above"),
            }
            Some(())
        })?;
        seen.all(SessionKey::REQUIRED)?;
        Some(Session {
            thread_id: IdRef::<ThreadId>::of_checked(&thread_id?).to_id(),
            status: status?,
            provider_name: provider_name?,
            runtime_mode: runtime_mode?,
            active_turn_id: active_turn_id?.map(|id| IdRef::<TurnId>::of_checked(&id).to_id()),
            last_error: last_error?,
            updated_at: updated_at?,
        })
    }
}

/// A thread as the scanner read it: checked exactly as its `serde` decode checks it (the ids
/// trimmed and non-empty, the timestamps, the enums), its texts borrowed from the document (owned
/// only where written with escapes). Nothing is allocated until a caller keeps it: the view builds
/// a [`FleetThread`] ([`ThreadRead::into_fleet`], one allocation for all its texts), the shell's
/// waits read one flag of it in place and keep only its id.
pub(super) struct ThreadRead<'a> {
    id: Cow<'a, str>,
    branch: Option<Cow<'a, str>>,
    worktree_path: Option<Cow<'a, str>>,
    latest_turn: Option<TurnRead<'a>>,
    updated_at: Timestamp,
    deleted_at: Option<Timestamp>,
    session: Option<SessionRead<'a>>,
    has_pending_user_input: bool,
    has_pending_approvals: bool,
}

/// A [`super::LatestTurn`] as read, its ids borrowed.
struct TurnRead<'a> {
    turn_id: Cow<'a, str>,
    state: TurnState,
    requested_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    assistant_message_id: Option<Cow<'a, str>>,
}

/// A session as read (what a [`FleetThread`] keeps of it), its error borrowed.
struct SessionRead<'a> {
    status: SessionStatus,
    last_error: Option<Cow<'a, str>>,
}

impl ThreadRead<'_> {
    /// The thread's id, owned: the one allocation of a thread whose waits are all that is kept.
    /// `None` never happens (the id was checked as it was read); it declines rather than panic.
    pub(super) fn thread_id(&self) -> Option<ThreadId> {
        ThreadId::new(self.id.clone().into_owned()).ok()
    }

    /// [`FleetThread::waits_for_person`] of the thread this reads as, without building it.
    pub(super) fn waits_for_person(&self) -> bool {
        super::read_model::waits_for_person(self, self.has_pending_user_input || self.has_pending_approvals)
    }

    /// The [`FleetThread`] the `serde` path decodes of the same text: its texts copied into the
    /// thread's one block (each id was checked as it was read).
    pub(super) fn into_fleet(self) -> FleetThread {
        let latest_turn = self.latest_turn.as_ref().map(|turn| {
            (
                FleetTurn {
                    state: turn.state,
                    requested_at: turn.requested_at,
                    started_at: turn.started_at,
                    completed_at: turn.completed_at,
                },
                turn.turn_id.as_ref(),
                turn.assistant_message_id.as_deref(),
            )
        });
        FleetThread::of(
            &self.id,
            self.branch.as_deref(),
            self.worktree_path.as_deref(),
            latest_turn,
            self.updated_at,
            self.deleted_at,
            self.session.as_ref().map(|s| (s.status, s.last_error.as_deref())),
            self.has_pending_user_input,
            self.has_pending_approvals,
        )
    }
}

/// The same facts as the [`FleetThread`] it builds ([`ThreadRead::into_fleet`]), so that
/// [`ThreadRead::waits_for_person`] is that thread's answer by the one rule.
impl ThreadFacts for ThreadRead<'_> {
    fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
    fn session_status(&self) -> Option<SessionStatus> {
        self.session.as_ref().map(|s| s.status)
    }
    fn last_error(&self) -> Option<&str> {
        self.session.as_ref().and_then(|s| s.last_error.as_deref())
    }
    fn turn_state(&self) -> Option<TurnState> {
        self.latest_turn.as_ref().map(|t| t.state)
    }
}

/// A thread's keys that afk reads (any other is checked and skipped); each one's value is its
/// bit in [`Seen`].
#[derive(Clone, Copy)]
enum ThreadKey {
    Id,
    ProjectId,
    Title,
    ModelSelection,
    RuntimeMode,
    InteractionMode,
    Branch,
    WorktreePath,
    LatestTurn,
    CreatedAt,
    UpdatedAt,
    ArchivedAt,
    Session,
    HasPendingUserInput,
    HasPendingApprovals,
    /// The snapshot's only.
    DeletedAt,
    /// The snapshot's only.
    Messages,
    /// The snapshot's only.
    Activities,
    /// The snapshot's only.
    Checkpoints,
    /// The shell's only.
    LatestUserMessageAt,
    /// The shell's only.
    HasActionableProposedPlan,
    /// A key T3 writes that afk does not read (no bit in [`Seen`]): in the tables only so that
    /// T3's documents take the in-place match for it, not the general path.
    Other,
}

impl ThreadKey {
    /// The keys `serde` requires of a thread of `shape` (the others have defaults).
    fn required(shape: Shape) -> u32 {
        let both = [
            Self::Id,
            Self::ProjectId,
            Self::Title,
            Self::ModelSelection,
            Self::RuntimeMode,
            Self::InteractionMode,
            Self::Branch,
            Self::WorktreePath,
            Self::LatestTurn,
            Self::CreatedAt,
            Self::UpdatedAt,
            Self::Session,
        ]
        .iter()
        .fold(0, |bits, &key| bits | 1 << key as u32);
        match shape {
            Shape::Snapshot => both | 1 << Self::DeletedAt as u32,
            Shape::Shell => both,
        }
    }
}

/// `view::SnapshotThread`'s keys, and those T3 writes beside them that afk does not read
/// ([`ThreadKey::Other`]), in the order T3 writes a snapshot's thread (its `OrchestrationThread`
/// schema and `ProjectionSnapshotQuery.getSnapshot`, T3 0.0.33).
const SNAPSHOT_THREAD_KEYS: [(&str, ThreadKey); 28] = [
    (written!("id"), ThreadKey::Id),
    (written!("projectId"), ThreadKey::ProjectId),
    (written!("title"), ThreadKey::Title),
    (written!("modelSelection"), ThreadKey::ModelSelection),
    (written!("runtimeMode"), ThreadKey::RuntimeMode),
    (written!("interactionMode"), ThreadKey::InteractionMode),
    (written!("branch"), ThreadKey::Branch),
    (written!("worktreePath"), ThreadKey::WorktreePath),
    (written!("retention"), ThreadKey::Other),
    (written!("latestTurn"), ThreadKey::LatestTurn),
    (written!("createdAt"), ThreadKey::CreatedAt),
    (written!("updatedAt"), ThreadKey::UpdatedAt),
    (written!("archivedAt"), ThreadKey::ArchivedAt),
    (written!("settledOverride"), ThreadKey::Other),
    (written!("settledAt"), ThreadKey::Other),
    (written!("snoozedUntil"), ThreadKey::Other),
    (written!("snoozedAt"), ThreadKey::Other),
    (written!("pinnedAt"), ThreadKey::Other),
    (written!("pinOrderKey"), ThreadKey::Other),
    (written!("titleRegeneration"), ThreadKey::Other),
    (written!("deletedAt"), ThreadKey::DeletedAt),
    (written!("messages"), ThreadKey::Messages),
    (written!("proposedPlans"), ThreadKey::Other),
    (written!("activities"), ThreadKey::Activities),
    (written!("checkpoints"), ThreadKey::Checkpoints),
    (written!("session"), ThreadKey::Session),
    (written!("hasPendingUserInput"), ThreadKey::HasPendingUserInput),
    (written!("hasPendingApprovals"), ThreadKey::HasPendingApprovals),
];

/// `view::ShellThread`'s keys, and those T3 writes beside them that afk does not read
/// ([`ThreadKey::Other`]), in the order T3 writes a shell's thread (its `OrchestrationThreadShell`
/// schema and `ProjectionSnapshotQuery.getShellSnapshot`, T3 0.0.33).
const SHELL_THREAD_KEYS: [(&str, ThreadKey); 26] = [
    (written!("id"), ThreadKey::Id),
    (written!("projectId"), ThreadKey::ProjectId),
    (written!("title"), ThreadKey::Title),
    (written!("modelSelection"), ThreadKey::ModelSelection),
    (written!("runtimeMode"), ThreadKey::RuntimeMode),
    (written!("interactionMode"), ThreadKey::InteractionMode),
    (written!("branch"), ThreadKey::Branch),
    (written!("worktreePath"), ThreadKey::WorktreePath),
    (written!("latestTurn"), ThreadKey::LatestTurn),
    (written!("createdAt"), ThreadKey::CreatedAt),
    (written!("updatedAt"), ThreadKey::UpdatedAt),
    (written!("archivedAt"), ThreadKey::ArchivedAt),
    (written!("settledOverride"), ThreadKey::Other),
    (written!("settledAt"), ThreadKey::Other),
    (written!("snoozedUntil"), ThreadKey::Other),
    (written!("snoozedAt"), ThreadKey::Other),
    (written!("pinnedAt"), ThreadKey::Other),
    (written!("pinOrderKey"), ThreadKey::Other),
    (written!("titleRegeneration"), ThreadKey::Other),
    (written!("session"), ThreadKey::Session),
    (written!("latestUserMessageAt"), ThreadKey::LatestUserMessageAt),
    (written!("hasPendingApprovals"), ThreadKey::HasPendingApprovals),
    (written!("hasPendingUserInput"), ThreadKey::HasPendingUserInput),
    (
        written!("hasActionableProposedPlan"),
        ThreadKey::HasActionableProposedPlan,
    ),
    (written!("backgroundLiveness"), ThreadKey::Other),
    (written!("planProgress"), ThreadKey::Other),
];

/// `view::ModelCheck`'s keys; each one's value is its bit in [`Seen`].
#[derive(Clone, Copy)]
enum ModelKey {
    InstanceId,
    Model,
    Options,
}

impl ModelKey {
    /// `options` has a default.
    const REQUIRED: u32 = 1 << Self::InstanceId as u32 | 1 << Self::Model as u32;
}

/// In the order T3's encoder writes a `ModelSelection` (`model` first; afk's own types, and so
/// the bench's documents, write `instanceId` first and take the general path for these two).
const MODEL_KEYS: [(&str, ModelKey); 3] = [
    (written!("model"), ModelKey::Model),
    (written!("instanceId"), ModelKey::InstanceId),
    (written!("options"), ModelKey::Options),
];

/// [`super::LatestTurn`]'s keys (all required); each one's value is its bit in [`Seen`].
#[derive(Clone, Copy)]
enum TurnKey {
    TurnId,
    State,
    RequestedAt,
    StartedAt,
    CompletedAt,
    AssistantMessageId,
}

impl TurnKey {
    const REQUIRED: u32 = (1 << TURN_KEYS.len()) - 1;
}

const TURN_KEYS: [(&str, TurnKey); 6] = [
    (written!("turnId"), TurnKey::TurnId),
    (written!("state"), TurnKey::State),
    (written!("requestedAt"), TurnKey::RequestedAt),
    (written!("startedAt"), TurnKey::StartedAt),
    (written!("completedAt"), TurnKey::CompletedAt),
    (written!("assistantMessageId"), TurnKey::AssistantMessageId),
];

/// `view::SessionRaw`'s keys (all required); each one's value is its bit in [`Seen`].
#[derive(Clone, Copy)]
enum SessionKey {
    ThreadId,
    Status,
    ProviderName,
    RuntimeMode,
    ActiveTurnId,
    LastError,
    UpdatedAt,
    /// A key T3 writes that afk does not read (`providerInstanceId`): skipped, no bit in
    /// [`Seen`].
    Other,
}

impl SessionKey {
    const REQUIRED: u32 = (1 << (Self::UpdatedAt as u32 + 1)) - 1;
}

/// In the order T3 writes a session (`OrchestrationSession`), with T3's `providerInstanceId`
/// (written when set) as [`SessionKey::Other`].
const SESSION_KEYS: [(&str, SessionKey); 8] = [
    (written!("threadId"), SessionKey::ThreadId),
    (written!("status"), SessionKey::Status),
    (written!("providerName"), SessionKey::ProviderName),
    (written!("providerInstanceId"), SessionKey::Other),
    (written!("runtimeMode"), SessionKey::RuntimeMode),
    (written!("activeTurnId"), SessionKey::ActiveTurnId),
    (written!("lastError"), SessionKey::LastError),
    (written!("updatedAt"), SessionKey::UpdatedAt),
];

/// The name in a key written `"name":` ([`written!`]).
fn name_of(written: &str) -> &str {
    &written[1..written.len() - 2]
}

/// Whether `bytes` starts with `pattern`, compared a word at a time (keys are short and many; a
/// call to `memcmp` for each cost more than the compare).
#[inline]
fn starts_with(bytes: &[u8], pattern: &[u8]) -> bool {
    let n = pattern.len();
    let Some(head) = bytes.get(..n) else {
        return false;
    };
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("eight bytes"));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("four bytes"));
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(head, i) != word(pattern, i) {
                return false;
            }
            i += 8;
        }
        // The last eight bytes, overlapping those compared when `n` is not a multiple of eight.
        word(head, n - 8) == word(pattern, n - 8)
    } else if n >= 4 {
        half(head, 0) == half(pattern, 0) && half(head, n - 4) == half(pattern, n - 4)
    } else {
        head == pattern
    }
}

/// Where the next `"`, `\` or control character is, from `at` (`bytes.len()` when none): eight
/// bytes at a time (the word-at-a-time test `serde_json` uses too).
#[inline]
fn start_of_special(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let found = (control | quote | backslash) & HIGH;
        if found != 0 {
            return at + found.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return at;
        }
        at += 1;
    }
    at
}

/// The text of a string's raw contents whose escapes [`Scan::raw_string`] already checked.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let bytes = rest.as_bytes();
        let (ch, used) = match bytes.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hex = |from: usize| u32::from_str_radix(rest.get(from..from + 4)?, 16).ok();
                let n = hex(at + 2)?;
                if (0xD800..=0xDBFF).contains(&n) {
                    let low = hex(at + 8)?;
                    (
                        char::from_u32(0x1_0000 + ((n - 0xD800) << 10) + (low - 0xDC00))?,
                        12,
                    )
                } else {
                    (char::from_u32(n)?, 6)
                }
            }
            _ => return None,
        };
        out.push(ch);
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Some(out)
}
