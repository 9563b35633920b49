//! A grid maze with keys and doors, as a ludus env plugin.
//!
//! The maze is generated from the episode seed (a perfect maze by randomised
//! depth-first search). Doors (`A`, `B`, ...) sit on the only path to the goal;
//! the matching key (`a`, `b`, ...) lies somewhere reachable before its door.
//! Reward is sparse: 1 on reaching the goal `G`, 0 otherwise.
//!
//! Observation parts: `grid` (text, one row per line: `#` wall, `@` agent),
//! `position` and `goal` (vectors [x, y]), `keys` (text: the keys held).
//! Actions: discrete(4): 0 up, 1 right, 2 down, 3 left.
//! Config: `size=11` (odd, 5..=63), `doors=1` (0..=4), `max_steps=N`.

use ludus_sdk::*;

pub const MOVES: [(i32, i32); 4] = [(0, -1), (1, 0), (0, 1), (-1, 0)];

pub struct Maze {
    size: usize,
    doors: usize,
    max_steps: u32,
    cells: Vec<u8>,
    pos: (usize, usize),
    goal: (usize, usize),
    keys: String,
    steps: u32,
}

impl Maze {
    fn at(&self, x: usize, y: usize) -> u8 {
        self.cells[y * self.size + x]
    }

    fn set(&mut self, x: usize, y: usize, c: u8) {
        self.cells[y * self.size + x] = c;
    }

    fn generate(&mut self, seed: u64) {
        let n = self.size;
        let mut rng = Rng::new(seed);
        self.cells = vec![b'#'; n * n];
        // Randomised DFS carving on odd coordinates.
        let mut stack = vec![(1usize, 1usize)];
        self.set(1, 1, b' ');
        while let Some(&(x, y)) = stack.last() {
            let mut options = Vec::new();
            for (dx, dy) in MOVES {
                let nx = x as i32 + dx * 2;
                let ny = y as i32 + dy * 2;
                if nx > 0
                    && ny > 0
                    && (nx as usize) < n - 1
                    && (ny as usize) < n - 1
                    && self.at(nx as usize, ny as usize) == b'#'
                {
                    options.push((nx as usize, ny as usize, dx, dy));
                }
            }
            if options.is_empty() {
                stack.pop();
                continue;
            }
            let (nx, ny, dx, dy) = options[rng.below(options.len() as u32) as usize];
            self.set((x as i32 + dx) as usize, (y as i32 + dy) as usize, b' ');
            self.set(nx, ny, b' ');
            stack.push((nx, ny));
        }
        self.pos = (1, 1);
        self.goal = (n - 2, n - 2);
        // The unique path from start to goal.
        let path = self.path(self.pos, self.goal);
        // Doors at evenly spread points of the path (not the ends).
        let mut doors = Vec::new();
        for d in 0..self.doors {
            let i = (d + 1) * path.len() / (self.doors + 1);
            let i = i.clamp(1, path.len().saturating_sub(2));
            if i == 0 || doors.contains(&path[i]) {
                continue;
            }
            doors.push(path[i]);
        }
        for (d, &(x, y)) in doors.iter().enumerate() {
            self.set(x, y, b'A' + d as u8);
        }
        // Each key somewhere reachable with the keys before it.
        for (d, &(door_x, door_y)) in doors.iter().enumerate() {
            let reachable = self.reachable(self.pos, d);
            let spots: Vec<_> = reachable
                .into_iter()
                .filter(|&p| p != self.pos && p != self.goal && self.at(p.0, p.1) == b' ')
                .collect();
            if spots.is_empty() {
                // Degenerate tiny maze: open the door instead.
                self.set(door_x, door_y, b' ');
                continue;
            }
            let (x, y) = spots[rng.below(spots.len() as u32) as usize];
            self.set(x, y, b'a' + d as u8);
        }
        self.set(self.goal.0, self.goal.1, b'G');
        self.keys.clear();
        self.steps = 0;
    }

    /// Cells reachable from `from` treating doors >= `first_closed` as walls.
    fn reachable(&self, from: (usize, usize), first_closed: usize) -> Vec<(usize, usize)> {
        let mut seen = vec![false; self.cells.len()];
        let mut queue = std::collections::VecDeque::from([from]);
        seen[from.1 * self.size + from.0] = true;
        let mut out = Vec::new();
        while let Some((x, y)) = queue.pop_front() {
            out.push((x, y));
            for (dx, dy) in MOVES {
                let (nx, ny) = ((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                let c = self.at(nx, ny);
                let closed = c == b'#'
                    || (c.is_ascii_uppercase() && c != b'G' && (c - b'A') as usize >= first_closed);
                if !closed && !seen[ny * self.size + nx] {
                    seen[ny * self.size + nx] = true;
                    queue.push_back((nx, ny));
                }
            }
        }
        out
    }

    /// Shortest path through open cells (ignoring doors), as a list of cells.
    fn path(&self, from: (usize, usize), to: (usize, usize)) -> Vec<(usize, usize)> {
        let mut prev = vec![usize::MAX; self.cells.len()];
        let mut queue = std::collections::VecDeque::from([from]);
        prev[from.1 * self.size + from.0] = from.1 * self.size + from.0;
        while let Some((x, y)) = queue.pop_front() {
            if (x, y) == to {
                break;
            }
            for (dx, dy) in MOVES {
                let (nx, ny) = ((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                let i = ny * self.size + nx;
                if self.at(nx, ny) != b'#' && prev[i] == usize::MAX {
                    prev[i] = y * self.size + x;
                    queue.push_back((nx, ny));
                }
            }
        }
        let mut path = vec![to];
        let mut i = to.1 * self.size + to.0;
        while i != from.1 * self.size + from.0 && prev[i] != usize::MAX {
            i = prev[i];
            path.push((i % self.size, i / self.size));
        }
        path.reverse();
        path
    }

    fn observation(&self) -> Observation {
        let mut grid = String::with_capacity(self.size * (self.size + 1));
        for y in 0..self.size {
            for x in 0..self.size {
                grid.push(if (x, y) == self.pos {
                    '@'
                } else {
                    self.at(x, y) as char
                });
            }
            grid.push('\n');
        }
        vec![
            Part {
                name: "grid".into(),
                value: Value::Text(grid),
            },
            Part {
                name: "position".into(),
                value: Value::Vector(vec![self.pos.0 as f32, self.pos.1 as f32]),
            },
            Part {
                name: "goal".into(),
                value: Value::Vector(vec![self.goal.0 as f32, self.goal.1 as f32]),
            },
            Part {
                name: "keys".into(),
                value: Value::Text(self.keys.clone()),
            },
        ]
    }
}

impl Env for Maze {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        let (mut size, mut doors, mut max_steps) = (11usize, 1usize, None);
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "size" => size = parse_value(&k, &v)?,
                "doors" => doors = parse_value(&k, &v)?,
                "max_steps" => max_steps = Some(parse_value(&k, &v)?),
                _ => {
                    return Err(format!(
                        "maze: unknown config key `{k}` (known: size, doors, max_steps)"
                    ));
                }
            }
        }
        if !(5..=63).contains(&size) || size % 2 == 0 {
            return Err(format!(
                "maze: size must be odd and within 5..=63 (got {size})"
            ));
        }
        if doors > 4 {
            return Err(format!("maze: doors must be within 0..=4 (got {doors})"));
        }
        let max_steps = max_steps.unwrap_or((size * size * 4) as u32);
        let info = EnvInfo {
            name: "maze".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!("A {size}x{size} maze with {doors} locked door(s); reach G."),
            observation_space: vec![
                NamedSpace {
                    name: "grid".into(),
                    space: PartSpace::Text((size * (size + 1)) as u32),
                },
                NamedSpace {
                    name: "position".into(),
                    space: PartSpace::Box(BoxSpace {
                        shape: vec![2],
                        low: vec![0.0; 2],
                        high: vec![size as f32; 2],
                    }),
                },
                NamedSpace {
                    name: "goal".into(),
                    space: PartSpace::Box(BoxSpace {
                        shape: vec![2],
                        low: vec![0.0; 2],
                        high: vec![size as f32; 2],
                    }),
                },
                NamedSpace {
                    name: "keys".into(),
                    space: PartSpace::Text(8),
                },
            ],
            action_space: ActionSpace {
                discrete: Some(4),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps,
            vector_size: 0,
        };
        let maze = Maze {
            size,
            doors,
            max_steps,
            cells: Vec::new(),
            pos: (1, 1),
            goal: (1, 1),
            keys: String::new(),
            steps: 0,
        };
        Ok((maze, info))
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        self.generate(seed);
        ResetResult {
            observation: self.observation(),
            task: "Reach G. Doors (A, B, ...) open with their keys (a, b, ...).".into(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        self.steps += 1;
        let mut note = "";
        if let Action::Discrete(a) = action
            && let Some(&(dx, dy)) = MOVES.get(*a as usize)
        {
            let (nx, ny) = (
                (self.pos.0 as i32 + dx) as usize,
                (self.pos.1 as i32 + dy) as usize,
            );
            let c = self.at(nx, ny);
            match c {
                b'#' => note = "wall",
                b'A'..=b'F' => {
                    let key = (c - b'A' + b'a') as char;
                    if self.keys.contains(key) {
                        self.set(nx, ny, b' ');
                        self.pos = (nx, ny);
                        note = "opened door";
                    } else {
                        note = "locked door";
                    }
                }
                b'a'..=b'f' => {
                    self.keys.push(c as char);
                    self.set(nx, ny, b' ');
                    self.pos = (nx, ny);
                    note = "picked up key";
                }
                _ => self.pos = (nx, ny),
            }
        }
        let success = self.pos == self.goal;
        let truncated = !success && self.steps >= self.max_steps;
        let info = if success {
            success_info(true)
        } else if note.is_empty() {
            "{}".into()
        } else {
            format!(r#"{{"event":"{note}"}}"#)
        };
        StepResult {
            observation: self.observation(),
            reward: if success { 1.0 } else { 0.0 },
            terminated: success,
            truncated,
            info,
        }
    }
}

export_env!(Maze);
