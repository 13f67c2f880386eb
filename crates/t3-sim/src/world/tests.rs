//! The world's unit tests: timers, receipts, the snapshot of a large fleet.

use super::*;
use crate::config::SimProject;
use t3_client::wire::{
    InteractionMode, MessageRole, ModelSelection, NonEmptyString, ReadModel, RuntimeMode, ThreadCreate,
    ThreadTurnStart, TurnMessage, TurnState,
};

fn world() -> World {
    World::new(&SimConfig {
        projects: vec![SimProject::new("p", "/w")],
        turn_duration: Duration::from_secs(10),
        startup_delay: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .expect("a valid config")
}

fn create(command: &str, thread: &str, title: &str) -> ClientCommand {
    ClientCommand::ThreadCreate(ThreadCreate {
        command_id: CommandId::new(command).expect("id"),
        thread_id: ThreadId::new(thread).expect("id"),
        project_id: ProjectId::new("p").expect("id"),
        title: NonEmptyString::new(title).expect("title"),
        model_selection: ModelSelection {
            instance_id: NonEmptyString::new("claudeAgent").expect("instance"),
            model: NonEmptyString::new("claude-sonnet-4-5").expect("model"),
            options: None,
        },
        runtime_mode: RuntimeMode::FullAccess,
        interaction_mode: InteractionMode::Default,
        branch: None,
        worktree_path: None,
        created_at: Timestamp::now(),
    })
}

fn turn(command: &str, thread: &str, text: &str) -> ClientCommand {
    ClientCommand::ThreadTurnStart(ThreadTurnStart {
        command_id: CommandId::new(command).expect("id"),
        thread_id: ThreadId::new(thread).expect("id"),
        message: TurnMessage {
            message_id: MessageId::new(format!("m-{command}")).expect("id"),
            role: MessageRole::User,
            text: text.into(),
            attachments: Vec::new(),
        },
        model_selection: None,
        runtime_mode: RuntimeMode::FullAccess,
        interaction_mode: InteractionMode::Default,
        bootstrap: None,
        created_at: Timestamp::now(),
    })
}

fn state(world: &World, thread: &str) -> SimThreadState {
    world
        .thread(&ThreadId::new(thread).expect("id"))
        .map(|t| t.state)
        .expect("the thread exists")
}

#[test]
fn a_turn_is_admitted_after_the_startup_delay_and_ends_after_its_duration() {
    let mut world = world();
    let t0 = Instant::now();
    world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
    world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
    assert_eq!(state(&world, "t1"), SimThreadState::Starting);
    assert_eq!(world.fire_due(t0), Some(t0 + Duration::from_secs(1)));
    assert_eq!(
        world.fire_due(t0 + Duration::from_secs(1)),
        Some(t0 + Duration::from_secs(11))
    );
    assert_eq!(state(&world, "t1"), SimThreadState::Running);
    assert_eq!(world.fire_due(t0 + Duration::from_secs(11)), None);
    assert_eq!(state(&world, "t1"), SimThreadState::Completed);
}

#[test]
fn timers_of_an_ended_turn_are_ignored() {
    let mut world = world();
    let t0 = Instant::now();
    world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
    world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
    assert!(world.finish_turn(&ThreadId::new("t1").expect("id"), TurnOutcome::Error("x".into())));
    let sequence = world.sequence();
    assert_eq!(world.fire_due(t0 + Duration::from_secs(60)), None);
    assert_eq!(world.sequence(), sequence, "stale timers change nothing");
    assert_eq!(state(&world, "t1"), SimThreadState::Error);
}

#[test]
fn the_sequence_grows_with_every_change_and_receipts_replay_it() {
    let mut world = world();
    let t0 = Instant::now();
    let a = world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
    let b = world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
    assert!(b > a);
    world.fire_due(t0 + Duration::from_secs(1));
    assert!(world.sequence() > b, "admitting the turn is a change");
    assert_eq!(world.dispatch(&create("c1", "t1", "T"), t0), Ok(a));
    assert!(
        world.dispatch(&create("c1", "t2", "T"), t0).is_err(),
        "a conflict"
    );
}

#[test]
fn snapshot_of_ten_thousand_threads_serialises_every_thread() {
    let mut world = world();
    let t0 = Instant::now();
    for i in 0..10_000 {
        world
            .dispatch(&create(&format!("c{i}"), &format!("t{i}"), "T"), t0)
            .expect("created");
        world
            .dispatch(&turn(&format!("s{i}"), &format!("t{i}"), "go"), t0)
            .expect("started");
    }
    world.fire_due(t0 + Duration::from_secs(1));
    let started = std::time::Instant::now();
    let body = world.snapshot_json().expect("serialises");
    eprintln!(
        "snapshot of 10k threads: {} bytes in {:?}",
        body.len(),
        started.elapsed()
    );
    let model: ReadModel = serde_json::from_slice(&body).expect("the client's read model decodes it");
    assert_eq!(model.threads.len(), 10_000);
    assert!(model
        .threads
        .iter()
        .all(|t| t.latest_turn.as_ref().map(|l| l.state) == Some(TurnState::Running)));
    assert_eq!(model, world.read_model());

    // Again, after one thread changed: the cached JSON of the others is reused, the changed
    // one is not.
    assert!(world.finish_turn(&ThreadId::new("t7").expect("id"), TurnOutcome::Completed));
    let started = std::time::Instant::now();
    let body = world.snapshot_json().expect("serialises");
    eprintln!("snapshot of 10k threads, one changed: {:?}", started.elapsed());
    let model: ReadModel = serde_json::from_slice(&body).expect("decodes");
    assert_eq!(model, world.read_model());
    let t7 = model.thread(&ThreadId::new("t7").expect("id")).expect("t7");
    assert_eq!(
        t7.latest_turn.as_ref().map(|l| l.state),
        Some(TurnState::Completed)
    );
}
