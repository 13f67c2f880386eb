//! Where a job came from and why it was cancelled: typed, stored by name, and read by
//! [`crate::apply`] to decide whether a cancelled job may come back.

use std::fmt;

named_enum!(
    /// Where a job came from. Kept from the job's first upsert: the source owns the issue's text,
    /// and only it withdraws or brings back the job.
    JobSource ("job source") {
        /// A Markdown file in the local issue folder (`[source.local]`).
        Local => "local",
        /// A GitHub issue labelled by someone with write access (`[github]`).
        GitHub => "github",
        /// Queued by a person with `afk dispatch`.
        Manual => "manual",
    }
);

display_as_name!(JobSource);

named_enum!(
    /// Why a job was cancelled. Stored beside the job while it is cancelled; it decides who may
    /// bring the job back ([`CancelReason::undone_by`]).
    CancelReason ("cancel reason") {
        /// The job's issue file left the local folder; the file coming back requeues the job.
        FileRemoved => "file_removed",
        /// The GitHub issue was closed or lost its trigger label; the issue becoming eligible
        /// again requeues the job.
        Withdrawn => "withdrawn",
        /// A person interrupted the job's thread in T3: afk leaves it be, and only a person
        /// (`afk dispatch`) brings the job back.
        InterruptedInT3 => "interrupted_in_t3",
        /// A person cancelled the job by other means (also what a job cancelled before afk
        /// stored reasons gets when its note names none of the above): only a person brings it
        /// back.
        ByHand => "by_hand",
        /// GitHub no longer has the issue (deleted, transferred to another repository, or 404
        /// while the repository is readable): final, nothing brings the job back and afk no longer
        /// polls or reports on the issue.
        IssueGone => "issue_gone",
        /// A person with write access commented `/afk stop` on the issue or its pull request (who
        /// is kept with the command in the ledger): only a person brings the job back (`/afk
        /// retry`, `afk dispatch`), never the source.
        StoppedByCommand => "stopped_by_command",
    }
);

impl CancelReason {
    /// The source whose issue coming back undoes this cancellation, if any: a source requeues
    /// only what it withdrew itself, never a job a person stopped.
    pub fn undone_by(self) -> Option<JobSource> {
        match self {
            CancelReason::FileRemoved => Some(JobSource::Local),
            CancelReason::Withdrawn => Some(JobSource::GitHub),
            CancelReason::InterruptedInT3
            | CancelReason::ByHand
            | CancelReason::IssueGone
            | CancelReason::StoppedByCommand => None,
        }
    }
}

/// The reason as a person reads it in notes and logs.
impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelReason::FileRemoved => "its issue file was removed",
            CancelReason::Withdrawn => "the issue was closed or lost its trigger label",
            CancelReason::InterruptedInT3 => "interrupted in T3",
            CancelReason::ByHand => "cancelled by hand",
            CancelReason::IssueGone => "GitHub no longer has the issue (deleted or transferred)",
            CancelReason::StoppedByCommand => {
                "stopped by a `/afk stop` comment of a person with write access"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for &source in JobSource::ALL {
            assert_eq!(source.as_str().parse::<JobSource>(), Ok(source));
            assert_eq!(
                serde_json::to_value(source).unwrap(),
                serde_json::json!(source.as_str()),
                "JSON spells a source as the ledger stores it"
            );
        }
        for reason in CancelReason::ALL {
            assert_eq!(reason.as_str().parse::<CancelReason>(), Ok(*reason));
        }
        assert!("gitlab".parse::<JobSource>().is_err());
        assert!("bored".parse::<CancelReason>().is_err());
    }

    #[test]
    fn a_source_undoes_only_the_cancellations_it_caused() {
        let cases = [
            (CancelReason::FileRemoved, Some(JobSource::Local)),
            (CancelReason::Withdrawn, Some(JobSource::GitHub)),
            (CancelReason::InterruptedInT3, None),
            (CancelReason::ByHand, None),
            (CancelReason::IssueGone, None),
            (CancelReason::StoppedByCommand, None),
        ];
        for (reason, undone_by) in cases {
            assert_eq!(reason.undone_by(), undone_by, "{reason:?}");
        }
    }
}
