//! Data-driven tests of the debugger on episodes built in memory (no wasm, no
//! database): a [`Session`] stepped, stopped at CEL breakpoints and watched,
//! and frames and episodes diffed, each checked against its printed output
//! inline. `UPDATE_EXPECT=1 cargo test -p ludus-debugger --lib tests::`
//! rewrites the expected blocks after a deliberate change.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use ludus_arena::model::{
    Action, Frame, Level, LogLine, MemoryWrite, Part, Role, Timing, Value as PartValue,
};

use crate::diff::{diff_episodes, diff_frames, diff_step};
use crate::session::Session;
use crate::source::Frames;
use crate::view::{EpisodeMeta, frame_json};

/// Frame `step` of a small walk: position `x`, a discrete action, reward 1
/// (10 at the goal), a log line on even steps, and the agent's `/agent/phase`
/// written on every third step.
fn frame(step: u32, x: f32, action: u32, done: bool) -> Frame {
    Frame {
        step,
        observation: vec![
            Part {
                name: "x".into(),
                value: PartValue::Vector(vec![x, -x]),
            },
            Part {
                name: "cell".into(),
                value: PartValue::Discrete(step % 4),
            },
        ],
        action: Action::Discrete(action),
        env_reward: if done { 10.0 } else { 1.0 },
        reward: if done { 10.0 } else { 1.0 },
        terminated: done,
        truncated: false,
        info: format!("{{\"lap\":{}}}", step / 4),
        success: done.then_some(true),
        note: None,
        logs: if step.is_multiple_of(2) {
            vec![LogLine {
                role: Role::Agent,
                level: Level::Info,
                message: format!("thinking at {step}"),
            }]
        } else {
            Vec::new()
        },
        memory_writes: if step.is_multiple_of(3) {
            vec![MemoryWrite {
                path: "/agent/phase".into(),
                value: Some(format!("p{}", step / 3)),
            }]
        } else {
            Vec::new()
        },
        model_calls: Vec::new(),
    }
}

/// An episode of `len` frames whose position moves by the action (0 back,
/// 1 forward); `actions` picks each step's action.
fn episode(id: i64, len: u32, actions: impl Fn(u32) -> u32) -> Frames {
    let mut x = 0.0f32;
    let frames: Vec<(Frame, Timing)> = (0..len)
        .map(|k| {
            let a = actions(k);
            let f = frame(k, x, a, k + 1 == len);
            x += if a == 1 { 0.5 } else { -0.5 };
            (
                f,
                Timing {
                    act_ns: 100,
                    step_ns: 200,
                    score_ns: 0,
                },
            )
        })
        .collect();
    let return_ = frames.iter().map(|(f, _)| f64::from(f.reward)).sum();
    Frames {
        frames,
        start: BTreeMap::from([("/user/goal".to_string(), "right".to_string())]),
        meta: EpisodeMeta {
            id,
            outcome: "terminated".into(),
            length: u64::from(len),
            return_,
            success: true,
            seed: 7,
        },
    }
}

fn walk() -> Session {
    Session::new(Box::new(episode(1, 8, |k| u32::from(k % 3 != 2))))
}

/// One line per frame view: where the cursor is and what it sees.
fn line(s: &Session) -> String {
    let v = s.current().expect("current frame");
    let x = match &v.frame.observation[0].value {
        PartValue::Vector(x) => x[0],
        _ => f32::NAN,
    };
    format!(
        "frame {} step {} x {x} action {:?} reward {} memory {:?}\n",
        v.index, v.frame.step, v.frame.action, v.frame.reward, v.memory
    )
}

fn check(actual: String, expected: Expect) {
    expected.assert_eq(&actual);
}

#[test]
fn next_prev_and_goto_move_the_cursor_within_the_episode() {
    let mut s = walk();
    let mut out = line(&s);
    for _ in 0..3 {
        out.push_str(&format!("next -> {}\n", s.next()));
        out.push_str(&line(&s));
    }
    out.push_str(&format!("prev -> {}\n", s.prev()));
    out.push_str(&line(&s));
    s.goto(7).expect("goto 7");
    out.push_str(&line(&s));
    out.push_str(&format!("next at the end -> {}\n", s.next()));
    match s.goto(8) {
        Ok(()) => out.push_str("goto 8 -> ok\n"),
        Err(e) => out.push_str(&format!("goto 8 -> {e}\n")),
    }
    s.first();
    out.push_str(&format!("prev at the start -> {}\n", s.prev()));
    out.push_str(&line(&s));
    check(
        out,
        expect![[r#"
            frame 0 step 0 x 0 action Action::Discrete(1) reward 1 memory {"/agent/phase": "p0", "/user/goal": "right"}
            next -> true
            frame 1 step 1 x 0.5 action Action::Discrete(1) reward 1 memory {"/agent/phase": "p0", "/user/goal": "right"}
            next -> true
            frame 2 step 2 x 1 action Action::Discrete(0) reward 1 memory {"/agent/phase": "p0", "/user/goal": "right"}
            next -> true
            frame 3 step 3 x 0.5 action Action::Discrete(1) reward 1 memory {"/agent/phase": "p1", "/user/goal": "right"}
            prev -> true
            frame 2 step 2 x 1 action Action::Discrete(0) reward 1 memory {"/agent/phase": "p0", "/user/goal": "right"}
            frame 7 step 7 x 1.5 action Action::Discrete(1) reward 10 memory {"/agent/phase": "p2", "/user/goal": "right"}
            next at the end -> false
            goto 8 -> there is no frame 8: the episode has 8 frames (0..7)
            prev at the start -> false
            frame 0 step 0 x 0 action Action::Discrete(1) reward 1 memory {"/agent/phase": "p0", "/user/goal": "right"}
        "#]],
    );
}

#[test]
fn continue_stops_at_each_breakpoint_hit_and_counts_them() {
    let mut s = walk();
    let back = s.add_breakpoint("action.value == 0").expect("breakpoint");
    let phase = s
        .add_breakpoint("memory['/agent/phase'] != prev.memory['/agent/phase']")
        .expect("breakpoint");
    let mut out = format!("breakpoints: back={back} phase={phase}\n");
    while let Some(hit) = s.continue_forward().expect("continue") {
        out.push_str(&format!(
            "hit frame {} breakpoints {:?} cursor {}\n",
            hit.frame,
            hit.breakpoints,
            s.cursor()
        ));
    }
    out.push_str(&format!("no more hits; cursor stays at {}\n", s.cursor()));
    for b in s.breakpoints() {
        out.push_str(&format!(
            "#{} `{}` hits {} error {:?}\n",
            b.id,
            b.expr.source(),
            b.hits,
            b.error
        ));
    }
    check(
        out,
        expect![[r#"
            breakpoints: back=1 phase=2
            hit frame 2 breakpoints [1] cursor 2
            hit frame 3 breakpoints [2] cursor 3
            hit frame 5 breakpoints [1] cursor 5
            hit frame 6 breakpoints [2] cursor 6
            no more hits; cursor stays at 6
            #1 `action.value == 0` hits 2 error None
            #2 `memory['/agent/phase'] != prev.memory['/agent/phase']` hits 2 error None
        "#]],
    );
}

#[test]
fn reverse_continue_walks_back_through_hits_and_disabled_breakpoints_do_not_stop() {
    let mut s = walk();
    let logs = s
        .add_breakpoint("log.contains('thinking')")
        .expect("breakpoint");
    let done = s
        .add_breakpoint("done && success == true")
        .expect("breakpoint");
    s.last();
    let mut out = format!("from frame {}\n", s.cursor());
    while let Some(hit) = s.reverse_continue().expect("reverse") {
        out.push_str(&format!("back to {} {:?}\n", hit.frame, hit.breakpoints));
    }
    s.set_enabled(logs, false);
    out.push_str(&format!(
        "with #{logs} off, forward: {:?}\n",
        s.continue_forward().expect("continue")
    ));
    out.push_str(&format!(
        "frames where #{done} holds: {:?}\n",
        s.hits("done && success == true").expect("hits")
    ));
    check(
        out,
        expect![[r#"
            from frame 7
            back to 6 [1]
            back to 4 [1]
            back to 2 [1]
            back to 0 [1]
            with #1 off, forward: Some(Hit { frame: 7, breakpoints: [2] })
            frames where #2 holds: [7]
        "#]],
    );
}

#[test]
fn a_breakpoint_that_cannot_be_evaluated_records_its_first_error_and_never_stops() {
    let mut s = walk();
    s.add_breakpoint("observation.nothing[0] > 1.0")
        .expect("breakpoint");
    let hit = s.continue_forward().expect("continue");
    let b = &s.breakpoints()[0];
    check(
        format!("hit {hit:?}; hits {}; error {:?}\n", b.hits, b.error),
        expect![[r#"
            hit None; hits 0; error Some((1, "No such key: nothing"))
        "#]],
    );
}

#[test]
fn watches_show_their_values_and_errors_at_each_frame_as_json() {
    let mut s = walk();
    for w in [
        "observation.x[0] * 2.0",
        "memory['/agent/phase']",
        "prev.step",
        "changed",
        "info.lap + episode.seed",
        "observation.cell / 0",
    ] {
        s.add_watch(w).expect("watch");
    }
    let mut out = String::new();
    for k in [0, 3] {
        let values = s.watch_values(k).expect("watch values");
        out.push_str(&format!(
            "frame {k}: {}\n",
            serde_json::to_string_pretty(&values).expect("json")
        ));
    }
    check(
        out,
        expect![[r#"
            frame 0: [
              {
                "id": 1,
                "expr": "observation.x[0] * 2.0",
                "value": 0.0
              },
              {
                "id": 2,
                "expr": "memory['/agent/phase']",
                "value": "p0"
              },
              {
                "id": 3,
                "expr": "prev.step",
                "value": -1
              },
              {
                "id": 4,
                "expr": "changed",
                "value": [
                  "/agent/phase"
                ]
              },
              {
                "id": 5,
                "expr": "info.lap + episode.seed",
                "error": "Unsupported binary operator 'add': Int(0), UInt(7)"
              },
              {
                "id": 6,
                "expr": "observation.cell / 0",
                "error": "Division by zero of Int(0)"
              }
            ]
            frame 3: [
              {
                "id": 1,
                "expr": "observation.x[0] * 2.0",
                "value": 1.0
              },
              {
                "id": 2,
                "expr": "memory['/agent/phase']",
                "value": "p1"
              },
              {
                "id": 3,
                "expr": "prev.step",
                "value": 2
              },
              {
                "id": 4,
                "expr": "changed",
                "value": [
                  "/agent/phase"
                ]
              },
              {
                "id": 5,
                "expr": "info.lap + episode.seed",
                "error": "Unsupported binary operator 'add': Int(0), UInt(7)"
              },
              {
                "id": 6,
                "expr": "observation.cell / 0",
                "error": "Division by zero of Int(3)"
              }
            ]
        "#]],
    );
}

#[test]
fn a_frame_as_json() {
    let mut s = walk();
    s.goto(6).expect("goto");
    let json = frame_json(&s.current().expect("frame"));
    check(
        serde_json::to_string_pretty(&json).expect("json"),
        expect![[r#"
            {
              "action": "discrete(1)",
              "env_reward": 1.0,
              "frame": 6,
              "info": {
                "lap": 1
              },
              "logs": [
                {
                  "level": "info",
                  "message": "thinking at 6",
                  "role": "agent"
                }
              ],
              "memory": {
                "/agent/phase": "p2",
                "/user/goal": "right"
              },
              "memory_writes": [
                {
                  "path": "/agent/phase",
                  "value": "p2"
                }
              ],
              "note": null,
              "observation": {
                "cell": {
                  "Discrete": 2
                },
                "x": {
                  "Vector": [
                    1.0,
                    -1.0
                  ]
                }
              },
              "reward": 1.0,
              "step": 6,
              "success": null,
              "terminated": false,
              "timing": {
                "act_ns": 100,
                "score_ns": 0,
                "step_ns": 200
              },
              "truncated": false
            }"#]],
    );
}

#[test]
fn frame_against_frame_and_step_diffs_name_what_changed() {
    let s = walk();
    let a = s.view(2).expect("frame 2");
    let b = s.view(3).expect("frame 3");
    let mut out = String::from("frame 2 vs frame 3:\n");
    for c in diff_frames(&a.frame, &b.frame) {
        out.push_str(&format!("  {}\n", c.summary()));
    }
    out.push_str("what frame 3 did:\n");
    for c in diff_step(Some(&a), &b) {
        out.push_str(&format!("  {}\n", c.summary()));
    }
    out.push_str(&format!(
        "frame 3 vs itself: {} changes\n",
        diff_frames(&b.frame, &b.frame).len()
    ));
    check(
        out,
        expect![[r#"
            frame 2 vs frame 3:
              observation `x`: [0] 1 -> 0.5, [1] -1 -> -0.5
              observation `cell`: 2 -> 3
              action: discrete(0) -> discrete(1)
              log lines differ: -agent Level::Info: thinking at 2
              memory writes: [] -> [/agent/phase="p1"]
            what frame 3 did:
              observation `x`: [0] 1 -> 0.5, [1] -1 -> -0.5
              observation `cell`: 2 -> 3
              action: discrete(0) -> discrete(1)
              log lines differ: -agent Level::Info: thinking at 2
              memory: /agent/phase: "p0" -> "p1"
            frame 3 vs itself: 0 changes
        "#]],
    );
}

#[test]
fn episodes_that_part_at_one_action_diverge_there_and_end_apart() {
    let a = episode(1, 8, |k| u32::from(k % 3 != 2));
    // The same walk, but the agent steps back at step 4 too, and stops a frame early.
    let b = episode(2, 7, |k| u32::from(k % 3 != 2 && k != 4));
    let d = diff_episodes(&a, &b).expect("diff");
    let mut out = serde_json::to_string_pretty(&d).expect("json");
    out.push_str("\nsame episode: ");
    out.push_str(&format!(
        "identical {}\n",
        diff_episodes(&a, &a).expect("diff").identical
    ));
    check(
        out,
        expect![[r#"
            {
              "a": {
                "id": 1,
                "outcome": "terminated",
                "length": 8,
                "return": 17.0,
                "success": true,
                "frames": 8
              },
              "b": {
                "id": 2,
                "outcome": "terminated",
                "length": 7,
                "return": 16.0,
                "success": true,
                "frames": 7
              },
              "identical": false,
              "first_divergence": {
                "frame": 4,
                "changes": [
                  {
                    "what": "action",
                    "a": "discrete(1)",
                    "b": "discrete(0)"
                  }
                ]
              },
              "compared": 7,
              "differing": 3,
              "ranges": [
                [
                  4,
                  6
                ]
              ],
              "ending": [
                "length: 8 -> 7",
                "return: 17 -> 16"
              ]
            }
            same episode: identical true
        "#]],
    );
}
