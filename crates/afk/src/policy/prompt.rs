//! The prompt of a job's next attempt, for jobs that carry no template of their own (local files
//! and jobs queued by hand). The T3 client puts the standing rules before it.

use afk_ledger::{Job, JobInstruction};

/// The prompt for `job`'s next attempt: the issue's reference, title and body, and, on a retry, the
/// previous attempt's error so that the agent does not walk into it again.
pub fn render(job: &Job) -> String {
    let mut text = format!(
        "Work on issue {}: {}\n\n{}\n",
        job.issue,
        job.title.trim(),
        job.body.trim()
    );
    if job.attempts > 0 {
        if let Some(error) = job.last_error.as_deref().filter(|e| !e.trim().is_empty()) {
            text.push_str(&format!(
                "\nThis is attempt {} of this issue. The previous attempt ended with: {}\n",
                job.attempts + 1,
                error.trim()
            ));
        }
    }
    text
}

/// `prompt` with the instruction a person gave the job in a comment (`/afk <instruction>`), when
/// there is one, after it: the agent reads the issue first, then what was asked since.
pub fn with_instruction(prompt: String, instruction: Option<&JobInstruction>) -> String {
    let Some(instruction) = instruction else {
        return prompt;
    };
    format!(
        "{}\n\n{} (who has write access) asked in a comment on the issue:\n\n{}\n",
        prompt.trim_end(),
        instruction.author,
        instruction.text.trim()
    )
}

#[cfg(test)]
mod instruction_tests {
    use super::*;

    #[test]
    fn an_instruction_follows_the_prompt_and_none_leaves_it_as_it_is() {
        assert_eq!(with_instruction("Fix it.\n".into(), None), "Fix it.\n");
        let instruction = JobInstruction {
            text: " fix the tests \n".into(),
            author: "mona".into(),
        };
        assert_eq!(
            with_instruction("Fix it.\n".into(), Some(&instruction)),
            "Fix it.\n\nmona (who has write access) asked in a comment on the issue:\n\nfix the tests\n"
        );
    }
}
