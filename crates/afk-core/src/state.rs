//! The states of jobs and attempts, spelled as afk prints and stores them.

named_enum!(
    /// Where a job is in its life.
    JobState ("state") {
        /// Waiting for its first attempt.
        Queued => "queued",
        /// An attempt's ids are in the ledger and its commands are being sent to T3.
        Dispatching => "dispatching",
        /// An attempt's thread is working.
        Running => "running",
        /// The live attempt's thread waits for a person (the agent asked a question or for an
        /// approval in T3). Its attempt is still live; it is neither stalled nor timed out nor
        /// retried, and its waiting time does not count against the turn timeout.
        NeedsInput => "needs_input",
        /// The last attempt ended and the next waits out its back-off.
        RetryWait => "retry_wait",
        /// An attempt succeeded. Final.
        Succeeded => "succeeded",
        /// An attempt failed. Final when the failure was permanent; otherwise the retry policy
        /// moves the job on to `retry_wait` or `given_up`.
        Failed => "failed",
        /// An attempt ran past its stall or turn timeout; its thread is being interrupted, then
        /// the retry policy moves the job on.
        TimedOut => "timed_out",
        /// The job was withdrawn (issue removed, closed or unlabelled). Final.
        Cancelled => "cancelled",
        /// An attempt's thread vanished from T3; the retry policy moves the job on.
        Lost => "lost",
        /// The last allowed attempt ended without success. Final.
        GivenUp => "given_up",
        /// An attempt succeeded and opened a pull request, which afk follows (its checks, reviews
        /// and state); a failed check or a review requesting changes becomes a follow-up turn on
        /// the same thread.
        InReview => "in_review",
        /// The job's pull request was merged. Final.
        Merged => "merged",
        /// The job's pull request was closed without being merged. Final.
        Closed => "closed",
    }
);

display_as_name!(JobState, AttemptState);

impl JobState {
    /// True when nothing more will happen to the job unless its issue comes back.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Cancelled
                | JobState::GivenUp
                | JobState::Failed
                | JobState::Merged
                | JobState::Closed
        )
    }

    /// True while an attempt is live (its thread may be working in T3).
    pub fn has_live_attempt(self) -> bool {
        matches!(
            self,
            JobState::Dispatching | JobState::Running | JobState::NeedsInput
        )
    }
}

named_enum!(
    /// Where one attempt (one T3 thread) is.
    AttemptState ("state") {
        /// Its ids are chosen and its commands are being sent.
        Dispatching => "dispatching",
        /// Its thread is working.
        Running => "running",
        /// The turn completed.
        Succeeded => "succeeded",
        /// The turn, the session or the dispatch failed.
        Failed => "failed",
        /// It stalled or ran past the turn timeout and was interrupted.
        TimedOut => "timed_out",
        /// Its job was cancelled, or a person interrupted it in T3.
        Cancelled => "cancelled",
        /// Its thread vanished from T3.
        Lost => "lost",
    }
);

impl AttemptState {
    /// True while the attempt's thread may be working.
    pub fn is_live(self) -> bool {
        matches!(self, AttemptState::Dispatching | AttemptState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
        }
        for s in AttemptState::ALL {
            assert_eq!(s.as_str().parse::<AttemptState>().unwrap(), *s);
        }
        assert!("nope".parse::<JobState>().is_err());
    }
}
