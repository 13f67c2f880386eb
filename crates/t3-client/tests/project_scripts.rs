//! What afk reads from a project's scripts, which otherwise stay T3's JSON.

use t3_client::wire::ProjectShell;

fn project(scripts: &str) -> ProjectShell {
    serde_json::from_str(&format!(
        r#"{{"id": "proj-api", "title": "api", "workspaceRoot": "/srv/api",
            "defaultModelSelection": null, "scripts": {scripts},
            "createdAt": "2026-11-24T19:14:36.116Z", "updatedAt": "2026-11-24T19:14:36.116Z"}}"#
    ))
    .expect("a project in T3's shape")
}

#[test]
fn a_new_worktree_gets_the_setup_script_only_when_a_script_is_marked_for_it() {
    let cases = [
        ("[]", false, "no scripts"),
        (
            r#"[{"id": "test", "name": "Test", "command": "npm test", "icon": "test", "runOnWorktreeCreate": false}]"#,
            false,
            "a script not marked",
        ),
        (
            r#"[{"id": "test", "command": "npm test"}, {"id": "setup", "command": "npm ci", "runOnWorktreeCreate": true}]"#,
            true,
            "one script marked among others",
        ),
        (
            r#"[{"id": "odd", "runOnWorktreeCreate": "yes"}]"#,
            false,
            "a mark that is not a boolean",
        ),
    ];
    for (scripts, expected, case) in cases {
        assert_eq!(project(scripts).has_worktree_setup_script(), expected, "{case}");
    }
}
