//! A uniform grid of cells at least one radio range wide, so two nodes in range are in the same
//! or adjacent cells: each contact check looks at 9 cells instead of every node. Nodes are kept
//! in intrusive doubly linked lists per cell and move between lists only when they cross a cell
//! border (seldom, at walking speed), so a tick costs O(nodes + candidate pairs).

use super::mobility::Point;

const NONE: u32 = u32::MAX;
/// Most cells along one side (bounds memory whatever the area and range).
const MAX_SIDE: f64 = 512.0;

#[derive(Debug, Clone)]
pub(crate) struct Grid {
    cell: f64,
    cols: u32,
    rows: u32,
    head: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    cell_of: Vec<u32>,
}

impl Grid {
    /// A grid over `width` × `height` metres with cells at least `cell` wide. Points outside
    /// the area fall in the border cells (still correct: clamping never separates two points by
    /// more than one cell that were within one cell).
    pub(crate) fn new(width: f64, height: f64, cell: f64) -> Grid {
        let width = if width.is_finite() {
            width.max(0.0)
        } else {
            0.0
        };
        let height = if height.is_finite() {
            height.max(0.0)
        } else {
            0.0
        };
        let mut cell = if cell.is_finite() { cell } else { f64::MAX };
        cell = cell.max(width / MAX_SIDE).max(height / MAX_SIDE).max(1e-6);
        let cols = ((width / cell).ceil() as u32).max(1);
        let rows = ((height / cell).ceil() as u32).max(1);
        Grid {
            cell,
            cols,
            rows,
            head: vec![NONE; (cols as usize) * (rows as usize)],
            next: Vec::new(),
            prev: Vec::new(),
            cell_of: Vec::new(),
        }
    }

    /// The cell width.
    pub(crate) fn cell(&self) -> f64 {
        self.cell
    }

    fn coord(&self, v: f64, n: u32) -> u32 {
        let c = (v / self.cell).floor();
        if c.is_nan() || c <= 0.0 {
            0
        } else if c >= f64::from(n - 1) {
            n - 1
        } else {
            c as u32
        }
    }

    fn index_of(&self, p: Point) -> u32 {
        self.coord(p.y, self.rows) * self.cols + self.coord(p.x, self.cols)
    }

    /// Puts `node` at `p` (adding it if new).
    pub(crate) fn place(&mut self, node: u32, p: Point) {
        let n = node as usize;
        if n >= self.cell_of.len() {
            self.cell_of.resize(n + 1, NONE);
            self.next.resize(n + 1, NONE);
            self.prev.resize(n + 1, NONE);
        }
        let cell = self.index_of(p);
        if self.cell_of.get(n).copied() == Some(cell) {
            return;
        }
        self.unlink(node);
        let old_head = self.head.get(cell as usize).copied().unwrap_or(NONE);
        if let Some(h) = self.head.get_mut(cell as usize) {
            *h = node;
        }
        set(&mut self.next, node, old_head);
        set(&mut self.prev, node, NONE);
        if old_head != NONE {
            set(&mut self.prev, old_head, node);
        }
        set(&mut self.cell_of, node, cell);
    }

    fn unlink(&mut self, node: u32) {
        let cell = get(&self.cell_of, node);
        if cell == NONE {
            return;
        }
        let (p, nx) = (get(&self.prev, node), get(&self.next, node));
        if p == NONE {
            if let Some(h) = self.head.get_mut(cell as usize) {
                *h = nx;
            }
        } else {
            set(&mut self.next, p, nx);
        }
        if nx != NONE {
            set(&mut self.prev, nx, p);
        }
        set(&mut self.cell_of, node, NONE);
    }

    /// Calls `f` with every other node in `node`'s cell and the 8 around it.
    pub(crate) fn for_each_near(&self, node: u32, mut f: impl FnMut(u32)) {
        let cell = get(&self.cell_of, node);
        if cell == NONE {
            return;
        }
        let (cx, cy) = (cell % self.cols, cell / self.cols);
        for y in cy.saturating_sub(1)..=(cy + 1).min(self.rows - 1) {
            for x in cx.saturating_sub(1)..=(cx + 1).min(self.cols - 1) {
                let mut at = self
                    .head
                    .get((y * self.cols + x) as usize)
                    .copied()
                    .unwrap_or(NONE);
                while at != NONE {
                    if at != node {
                        f(at);
                    }
                    at = get(&self.next, at);
                }
            }
        }
    }
}

fn get(v: &[u32], i: u32) -> u32 {
    v.get(i as usize).copied().unwrap_or(NONE)
}

fn set(v: &mut [u32], i: u32, value: u32) {
    if let Some(slot) = v.get_mut(i as usize) {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::Rng;

    #[test]
    fn finds_exactly_the_pairs_a_brute_force_finds() {
        let mut rng = Rng::new(9);
        let range = 30.0;
        let mut grid = Grid::new(500.0, 300.0, range);
        let mut pts: Vec<Point> = (0..200)
            .map(|_| Point::new(rng.range_f64(-20.0, 520.0), rng.range_f64(-20.0, 320.0)))
            .collect();
        for round in 0..20 {
            for (i, p) in pts.iter().enumerate() {
                grid.place(i as u32, *p);
            }
            let mut by_grid = Vec::new();
            for i in 0..pts.len() as u32 {
                grid.for_each_near(i, |j| {
                    if j > i && pts[i as usize].distance2(&pts[j as usize]) <= range * range {
                        by_grid.push((i, j));
                    }
                });
            }
            by_grid.sort();
            let mut brute = Vec::new();
            for i in 0..pts.len() {
                for j in i + 1..pts.len() {
                    if pts[i].distance2(&pts[j]) <= range * range {
                        brute.push((i as u32, j as u32));
                    }
                }
            }
            assert_eq!(by_grid, brute, "round {round}");
            for p in &mut pts {
                p.x += rng.range_f64(-15.0, 15.0);
                p.y += rng.range_f64(-15.0, 15.0);
            }
        }
    }
}
