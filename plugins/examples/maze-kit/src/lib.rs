//! Pure helpers shared by the example maze agents.

use std::collections::VecDeque;

/// Moves in the maze's action order: 0 up, 1 right, 2 down, 3 left.
pub const MOVES: [(i32, i32); 4] = [(0, -1), (1, 0), (0, 1), (-1, 0)];
pub const LETTERS: [char; 4] = ['U', 'R', 'D', 'L'];

#[derive(Clone, Debug)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pub cells: Vec<u8>,
    pub agent: (usize, usize),
}

impl Grid {
    /// Parses the maze's `grid` text part; `@` marks the agent.
    pub fn parse(text: &str) -> Option<Grid> {
        let rows: Vec<&[u8]> = text
            .lines()
            .map(str::as_bytes)
            .filter(|r| !r.is_empty())
            .collect();
        let width = rows.first()?.len();
        let mut cells = Vec::with_capacity(width * rows.len());
        let mut agent = None;
        for (y, row) in rows.iter().enumerate() {
            if row.len() != width {
                return None;
            }
            for (x, &c) in row.iter().enumerate() {
                if c == b'@' {
                    agent = Some((x, y));
                    cells.push(b' ');
                } else {
                    cells.push(c);
                }
            }
        }
        Some(Grid {
            width,
            height: rows.len(),
            cells,
            agent: agent?,
        })
    }

    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.cells[y * self.width + x]
    }

    /// The neighbour of (x, y) in direction `m`, if inside the grid.
    pub fn neighbour(&self, (x, y): (usize, usize), m: usize) -> Option<(usize, usize)> {
        let (dx, dy) = MOVES[m];
        let nx = x as i32 + dx;
        let ny = y as i32 + dy;
        (nx >= 0 && ny >= 0 && (nx as usize) < self.width && (ny as usize) < self.height)
            .then_some((nx as usize, ny as usize))
    }
}

/// Bit of a key letter `a`..`f`.
pub fn key_bit(c: u8) -> u32 {
    1 << (c.to_ascii_lowercase() - b'a')
}

/// Bitmask of the keys in a `keys` text part.
pub fn key_mask(keys: &str) -> u32 {
    keys.bytes()
        .filter(u8::is_ascii_lowercase)
        .map(key_bit)
        .fold(0, |a, b| a | b)
}

/// Shortest action sequence from the agent to `G`, picking up keys to pass
/// doors, through cells for which `allowed` holds.
pub fn solve(grid: &Grid, keys: u32, allowed: impl Fn(usize, usize) -> bool) -> Option<Vec<u32>> {
    let n = grid.width * grid.height;
    let states = n * 64;
    let idx = |(x, y): (usize, usize), k: u32| (y * grid.width + x) * 64 + k as usize;
    let mut prev: Vec<u32> = vec![u32::MAX; states];
    let start = idx(grid.agent, keys);
    prev[start] = start as u32;
    let mut queue = VecDeque::from([(grid.agent, keys)]);
    while let Some((p, k)) = queue.pop_front() {
        if grid.at(p.0, p.1) == b'G' {
            // Walk back, recovering moves from the position change.
            let mut actions = Vec::new();
            let mut cur = idx(p, k);
            while cur != start {
                let before = prev[cur] as usize;
                let (c, b) = (cur / 64, before / 64);
                let (cx, cy, bx, by) = (
                    c % grid.width,
                    c / grid.width,
                    b % grid.width,
                    b / grid.width,
                );
                let m = MOVES.iter().position(|&(dx, dy)| {
                    bx as i32 + dx == cx as i32 && by as i32 + dy == cy as i32
                })?;
                actions.push(m as u32);
                cur = before;
            }
            actions.reverse();
            return Some(actions);
        }
        for m in 0..4 {
            let Some(q) = grid.neighbour(p, m) else {
                continue;
            };
            if !allowed(q.0, q.1) {
                continue;
            }
            let c = grid.at(q.0, q.1);
            let nk = match c {
                b'#' => continue,
                b'A'..=b'F' if k & key_bit(c) == 0 => continue,
                b'a'..=b'f' => k | key_bit(c),
                _ => k,
            };
            let j = idx(q, nk);
            if prev[j] == u32::MAX {
                prev[j] = idx(p, k) as u32;
                queue.push_back((q, nk));
            }
        }
    }
    None
}

/// FNV-1a, for naming layouts in memory.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn encode_actions(actions: &[u32]) -> String {
    actions.iter().map(|&a| LETTERS[a as usize % 4]).collect()
}

pub fn decode_actions(text: &str) -> Option<Vec<u32>> {
    text.chars()
        .map(|c| LETTERS.iter().position(|&l| l == c).map(|p| p as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_with_key() {
        let g = Grid::parse("#######\n#@ A G#\n#a#####\n#######\n").unwrap();
        let plan = solve(&g, 0, |_, _| true).unwrap();
        assert_eq!(encode_actions(&plan), "DURRRR");
    }
}
