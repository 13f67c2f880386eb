//! What T3's schemas check beyond decoding a command: trimmed non-empty strings, the message
//! length limit, image-only attachments. An error here is a 400 `invalid_command` over HTTP and a
//! `Die` over `/ws`.

use t3_client::wire::{t3_text_len, ClientCommand, MAX_INPUT_CHARS};

/// Checks what T3's schema checks beyond what decoding the command did, and normalises the
/// command as T3 does (trimmed strings). An error here is a 400 `invalid_command`.
pub(crate) fn validate(mut command: ClientCommand) -> Result<ClientCommand, String> {
    match &mut command {
        ClientCommand::ThreadCreate(c) => {
            c.branch = trimmed_non_empty("branch", c.branch.take())?;
            c.worktree_path = trimmed_non_empty("worktreePath", c.worktree_path.take())?;
        }
        ClientCommand::ThreadTurnStart(c) => {
            if let Some(thread) = c.bootstrap.as_mut().and_then(|b| b.create_thread.as_mut()) {
                thread.branch = trimmed_non_empty("bootstrap.createThread.branch", thread.branch.take())?;
                thread.worktree_path =
                    trimmed_non_empty("bootstrap.createThread.worktreePath", thread.worktree_path.take())?;
            }
            let len = t3_text_len(&c.message.text);
            if len > MAX_INPUT_CHARS {
                return Err(format!(
                    "message.text is {len} characters, over T3's limit of {MAX_INPUT_CHARS}"
                ));
            }
            for (i, attachment) in c.message.attachments.iter().enumerate() {
                check_attachment(attachment).map_err(|e| format!("message.attachments[{i}]: {e}"))?;
            }
        }
        _ => {}
    }
    Ok(command)
}

fn trimmed_non_empty(field: &str, value: Option<String>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(format!("{field} must be null or a non-empty string")),
        Some(v) => Ok(Some(v.trim().to_owned())),
    }
}

/// T3 accepts image uploads only: `{type: "image", name, mimeType: "image/…", sizeBytes, dataUrl}`.
fn check_attachment(value: &serde_json::Value) -> Result<(), String> {
    let object = value.as_object().ok_or("an attachment must be an object")?;
    let text = |key: &str| {
        object
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if object.get("type").and_then(|v| v.as_str()) != Some("image") {
        return Err("type must be \"image\"".into());
    }
    if text("name").is_none() || text("dataUrl").is_none() {
        return Err("name and dataUrl must be non-empty strings".into());
    }
    if !text("mimeType").is_some_and(|m| m.to_ascii_lowercase().starts_with("image/")) {
        return Err("mimeType must be an image type".into());
    }
    if object.get("sizeBytes").and_then(|v| v.as_u64()).is_none() {
        return Err("sizeBytes must be a non-negative integer".into());
    }
    Ok(())
}
