use crate::tasks::TaskKind;
use crate::ui::{DESKTOP, Input, Role};
use crate::*;

/// Plays the solver on one episode; returns (outcome, steps).
fn solve(kind: TaskKind, seed: u64, o: &Options) -> (Outcome, u32, Task) {
    let mut task = Task::new(kind, 160, 160, seed);
    let goal = Goal::parse(&task.instruction()).expect("instruction parses");
    assert_eq!(
        goal,
        task.goal,
        "instruction round trip for {}",
        task.instruction()
    );
    for step in 1..=kind.max_steps() {
        let input = next_input(&goal, &task.desktop.tree(), o);
        match task.step(&input) {
            Outcome::Running => {}
            out => return (out, step, task),
        }
    }
    (Outcome::Running, kind.max_steps(), task)
}

#[test]
fn the_solver_solves_every_task_with_pointer_and_with_element_actions() {
    for kind in TaskKind::ALL {
        for element_actions in [false, true] {
            let o = Options {
                element_actions,
                menu_hint: None,
            };
            for seed in 0..300 {
                let (out, steps, task) = solve(kind, seed, &o);
                assert_eq!(
                    out,
                    Outcome::Success,
                    "{} seed {seed} element_actions {element_actions} after {steps} steps: {}\n{:#?}",
                    kind.name(),
                    task.instruction(),
                    task.desktop.tree()
                );
            }
        }
    }
}

#[test]
fn the_workflow_takes_fifteen_steps_or_more() {
    for seed in 0..50 {
        let (_, steps, _) = solve(TaskKind::Workflow, seed, &Options::default());
        assert!(steps >= 15, "seed {seed}: {steps} steps");
    }
}

#[test]
fn a_menu_hint_saves_steps_in_the_workflow() {
    let (mut plain, mut hinted) = (0, 0);
    for seed in 0..40 {
        plain += solve(TaskKind::Workflow, seed, &Options::default()).1;
        let o = Options {
            element_actions: false,
            menu_hint: Some("File".into()),
        };
        let (out, steps, _) = solve(TaskKind::Workflow, seed, &o);
        assert_eq!(out, Outcome::Success);
        hinted += steps;
    }
    assert!(hinted < plain, "hinted {hinted} vs plain {plain}");
}

#[test]
fn wrong_answers_fail() {
    let mut task = Task::new(TaskKind::ClickButton, 160, 160, 3);
    let Goal::ClickButton { label } = task.goal.clone() else {
        panic!()
    };
    let tree = task.desktop.tree();
    let wrong = tree
        .iter()
        .find(|n| n.role == "button" && n.name != label)
        .expect("another button");
    let (x, y) = wrong.bounds.center();
    assert_eq!(task.step(&Input::Click { x, y }), Outcome::Failure);
    // Submitting an untouched form fails.
    let mut task = Task::new(TaskKind::TypeField, 160, 160, 4);
    let submit = task
        .desktop
        .tree()
        .into_iter()
        .find(|n| n.name == "Submit")
        .expect("submit");
    assert_eq!(task.step(&Input::Element(submit.id)), Outcome::Failure);
    // A click beside the button in click-random fails.
    let mut task = Task::new(TaskKind::ClickRandom, 64, 64, 5);
    let b = task.desktop.tree()[0].bounds;
    let (x, y) = if b.x > 0 {
        (b.x - 1, b.y)
    } else {
        (b.x + b.w, b.y)
    };
    assert_eq!(task.step(&Input::Click { x, y }), Outcome::Failure);
}

#[test]
fn the_export_item_is_disabled_until_the_box_is_ticked() {
    let task = Task::new(TaskKind::Workflow, 160, 160, 9);
    let export = task
        .desktop
        .widgets
        .iter()
        .find(|w| w.name == "Export")
        .expect("export");
    assert!(export.disabled);
}

fn render(task: &Task) -> Vec<u8> {
    let mut px = Vec::new();
    task.desktop.render(&mut px);
    px
}

#[test]
fn the_same_seed_renders_the_same_pixels_and_another_seed_differs() {
    for kind in TaskKind::ALL {
        let a = render(&Task::new(kind, 160, 160, 11));
        let b = render(&Task::new(kind, 160, 160, 11));
        let c = render(&Task::new(kind, 160, 160, 12));
        assert_eq!(a.len(), 160 * 160 * 3);
        assert_eq!(a, b, "{}", kind.name());
        assert_ne!(a, c, "{}", kind.name());
    }
}

/// Every shown element draws inside its own box: hiding it changes pixels only
/// inside its box, its descendants' boxes and under the cursor, and changes some.
#[test]
fn the_screenshot_and_the_element_tree_agree() {
    for kind in TaskKind::ALL {
        for seed in 0..20 {
            let mut task = Task::new(kind, 160, 160, seed);
            // Open a list so options and menu items are checked too, in the middle of an episode.
            let goal = task.goal.clone();
            for _ in 0..(seed % 9) {
                let input = next_input(&goal, &task.desktop.tree(), &Options::default());
                if task.step(&input) != Outcome::Running {
                    break;
                }
            }
            let full = render(&task);
            let (cx, cy) = task.desktop.cursor;
            let cursor = Rect::new(cx, cy, 6, 8);
            for node in task.desktop.tree() {
                let i = node.id as usize - 1;
                let mut hidden = task.clone();
                hidden.desktop.widgets[i].visible = false;
                let without = render(&hidden);
                let boxes: Vec<Rect> = task
                    .desktop
                    .tree()
                    .iter()
                    .filter(|n| n.id == node.id || descends(&task.desktop, n.id as usize - 1, i))
                    .map(|n| n.bounds)
                    .collect();
                let mut changed = 0;
                for y in 0..160 {
                    for x in 0..160 {
                        let k = (y * 160 + x) as usize * 3;
                        if full[k..k + 3] != without[k..k + 3] {
                            changed += 1;
                            assert!(
                                boxes.iter().any(|b| b.contains(x, y)) || cursor.contains(x, y),
                                "{} seed {seed}: {} {:?} drew at ({x},{y}) outside {:?}",
                                kind.name(),
                                node.role,
                                node.name,
                                node.bounds
                            );
                        }
                    }
                }
                // An open list drawn on top may hide an element entirely.
                let covered = !matches!(node.role.as_str(), "option" | "menuitem")
                    && task.desktop.tree().iter().any(|n| {
                        matches!(n.role.as_str(), "option" | "menuitem")
                            && n.bounds.overlaps(&node.bounds)
                    });
                assert!(
                    covered || changed > 0,
                    "{} seed {seed}: {} {:?} draws nothing",
                    kind.name(),
                    node.role,
                    node.name
                );
            }
        }
    }
}

fn descends(d: &Desktop, mut i: usize, ancestor: usize) -> bool {
    while let Some(p) = d.widgets[i].parent {
        if p == ancestor {
            return true;
        }
        i = p;
    }
    false
}

#[test]
fn the_cursor_and_hover_show_in_the_pixels() {
    let mut task = Task::new(TaskKind::ClickRandom, 64, 64, 1);
    let b = task.desktop.tree()[0].bounds;
    task.desktop.apply(&Input::Move { x: 0, y: 0 });
    let away = render(&task);
    let (x, y) = (b.x + 1, b.y + b.h - 2);
    task.desktop.apply(&Input::Move { x, y });
    let over = render(&task);
    // The button's face changes colour under the pointer.
    let k = ((b.y + 1) * 64 + b.x + b.w - 2) as usize * 3;
    assert_ne!(away[k..k + 3], over[k..k + 3], "hover");
    let c = ((y + 2) * 64 + x + 1) as usize * 3;
    assert_eq!(over[c..c + 3], crate::ui::WHITE, "cursor body");
    assert_eq!(away[..3], crate::ui::INK, "cursor tip at the origin");
    let _ = DESKTOP;
}

#[test]
fn keyboard_works_tab_type_enter() {
    let mut task = Task::new(TaskKind::TypeField, 160, 160, 21);
    let Goal::TypeField { field, text } = task.goal.clone() else {
        panic!()
    };
    let fields: Vec<String> = task
        .desktop
        .widgets
        .iter()
        .filter(|w| w.role == Role::TextField)
        .map(|w| w.name.clone())
        .collect();
    let k = fields.iter().position(|f| *f == field).expect("field");
    for _ in 0..=k {
        task.step(&Input::Key {
            key: "Tab".into(),
            shift: false,
        });
    }
    task.step(&Input::Type(format!("{text}x")));
    task.step(&Input::Key {
        key: "Backspace".into(),
        shift: false,
    });
    assert_eq!(
        task.step(&Input::Key {
            key: "Enter".into(),
            shift: false
        }),
        Outcome::Success
    );
}
