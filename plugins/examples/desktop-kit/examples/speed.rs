//! Native speed of one desktop step (input, render, tree): `cargo run --release -p desktop-kit --example speed`.
use desktop_kit::{Input, Task, TaskKind};

fn main() {
    for kind in [TaskKind::ClickButton, TaskKind::Workflow] {
        let mut task = Task::new(kind, 160, 160, 1);
        let mut px = Vec::new();
        let n = 20_000;
        let t = std::time::Instant::now();
        for i in 0..n {
            task.step(&Input::Move {
                x: i % 160,
                y: (i * 7) % 160,
            });
            task.desktop.render(&mut px);
            std::hint::black_box(task.desktop.tree());
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "{}: {:.1} µs per step natively",
            kind.name(),
            dt * 1e6 / n as f64
        );
    }
}
