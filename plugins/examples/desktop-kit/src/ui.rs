//! Widgets on a screen: hit testing, pointer and keyboard handling, the element
//! tree, and rendering to RGB pixels. Everything here is pure data in, data out.

use crate::font::{ADVANCE, GLYPH_H, glyph, text_width};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, w: i32, h: i32) -> Rect {
        Rect { x, y, w, h }
    }
    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && y >= self.y && x < self.x + self.w && y < self.y + self.h
    }
    pub fn center(&self) -> (i32, i32) {
        (self.x + self.w / 2, self.y + self.h / 2)
    }
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
    pub fn inset(&self, d: i32) -> Rect {
        Rect::new(
            self.x + d,
            self.y + d,
            (self.w - 2 * d).max(0),
            (self.h - 2 * d).max(0),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Window,
    Label,
    Button,
    Checkbox,
    TextField,
    Dropdown,
    Option,
    Slider,
    MenuBar,
    Menu,
    MenuItem,
}

impl Role {
    /// The role's name in the element tree.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Window => "window",
            Role::Label => "label",
            Role::Button => "button",
            Role::Checkbox => "checkbox",
            Role::TextField => "textfield",
            Role::Dropdown => "combobox",
            Role::Option => "option",
            Role::Slider => "slider",
            Role::MenuBar => "menubar",
            Role::Menu => "menu",
            Role::MenuItem => "menuitem",
        }
    }
    fn focusable(self) -> bool {
        matches!(
            self,
            Role::Button | Role::Checkbox | Role::TextField | Role::Dropdown | Role::Slider
        )
    }
}

#[derive(Clone, Debug)]
pub struct Widget {
    pub role: Role,
    pub name: String,
    /// Text of a field, the chosen option of a dropdown, the value of a slider.
    pub value: String,
    pub rect: Rect,
    pub parent: Option<usize>,
    pub visible: bool,
    pub checked: Option<bool>,
    pub disabled: bool,
    /// Dropdowns and menus: whether their children are shown.
    pub expanded: bool,
    /// Sliders: the largest value (the smallest is 0).
    pub max: i32,
}

impl Widget {
    pub fn new(role: Role, name: &str, rect: Rect, parent: Option<usize>) -> Widget {
        Widget {
            role,
            name: name.to_string(),
            value: String::new(),
            rect,
            parent,
            visible: true,
            checked: (role == Role::Checkbox).then_some(false),
            disabled: false,
            expanded: false,
            max: 0,
        }
    }
}

/// One node of the element tree (mirrors the contract's `element`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: u32,
    pub parent: Option<u32>,
    pub role: String,
    pub name: String,
    pub value: String,
    pub bounds: Rect,
    pub focused: bool,
    pub checked: Option<bool>,
    pub disabled: bool,
}

/// What a widget did in response to input, for the task logic to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A button or menu item was activated.
    Pressed(usize),
    /// Enter was pressed in a text field.
    Submitted(usize),
}

/// An input, in the desktop's own terms (the plugin converts the contract's actions).
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Move {
        x: i32,
        y: i32,
    },
    Click {
        x: i32,
        y: i32,
    },
    DoubleClick {
        x: i32,
        y: i32,
    },
    Drag {
        x: i32,
        y: i32,
        to_x: i32,
        to_y: i32,
    },
    Scroll {
        x: i32,
        y: i32,
        dx: i32,
        dy: i32,
    },
    Type(String),
    Key {
        key: String,
        shift: bool,
    },
    /// Click the centre of the element with this id.
    Element(u32),
    Noop,
}

/// The longest text a field holds.
pub const FIELD_MAX: usize = 24;

pub const DESKTOP: [u8; 3] = [0x2d, 0x6a, 0x8f];
pub const WINDOW: [u8; 3] = [0xec, 0xec, 0xec];
pub const TITLE: [u8; 3] = [0x35, 0x5c, 0xa8];
pub const INK: [u8; 3] = [0x20, 0x20, 0x20];
pub const WHITE: [u8; 3] = [0xff, 0xff, 0xff];
pub const FACE: [u8; 3] = [0xd0, 0xd0, 0xd0];
pub const HOVER: [u8; 3] = [0xe4, 0xee, 0xfa];
pub const FOCUS: [u8; 3] = [0x1e, 0x78, 0xe6];
pub const BORDER: [u8; 3] = [0x70, 0x70, 0x70];
pub const MUTED: [u8; 3] = [0x9a, 0x9a, 0x9a];
pub const SELECT: [u8; 3] = [0x9c, 0xc4, 0xf0];

/// Height of a window's title bar, of a menu bar and of one option or menu item.
pub const TITLE_H: i32 = 9;
pub const ROW_H: i32 = 9;

#[derive(Clone, Debug)]
pub struct Desktop {
    pub width: i32,
    pub height: i32,
    pub widgets: Vec<Widget>,
    pub focus: Option<usize>,
    pub cursor: (i32, i32),
    /// A window that takes all input while it is visible.
    pub modal: Option<usize>,
}

impl Desktop {
    pub fn new(width: i32, height: i32) -> Desktop {
        Desktop {
            width,
            height,
            widgets: Vec::new(),
            focus: None,
            cursor: (width / 2, height / 2),
            modal: None,
        }
    }

    pub fn add(&mut self, w: Widget) -> usize {
        self.widgets.push(w);
        self.widgets.len() - 1
    }

    /// Adds `names` as hidden children of a dropdown or menu, laid out below it
    /// (or above it when there is no room below).
    pub fn add_items(&mut self, owner: usize, names: &[String], role: Role) {
        let r = self.widgets[owner].rect;
        let w = names
            .iter()
            .map(|n| text_width(n) + 6)
            .max()
            .unwrap_or(0)
            .max(if role == Role::Option { r.w } else { 0 });
        let total = ROW_H * names.len() as i32;
        let below = r.y + r.h + total <= self.height;
        let top = if below { r.y + r.h } else { r.y - total };
        let x = r.x.min(self.width - w).max(0);
        for (k, n) in names.iter().enumerate() {
            // Shown only while the owner is expanded (see `shown`).
            self.add(Widget::new(
                role,
                n,
                Rect::new(x, top + k as i32 * ROW_H, w, ROW_H),
                Some(owner),
            ));
        }
    }

    /// Whether `i` and all its ancestors are visible (and expanded, for items).
    pub fn shown(&self, i: usize) -> bool {
        let w = &self.widgets[i];
        if !w.visible {
            return false;
        }
        match w.parent {
            None => true,
            Some(p) => {
                let pw = &self.widgets[p];
                let open = !matches!(w.role, Role::Option | Role::MenuItem) || pw.expanded;
                open && self.shown(p)
            }
        }
    }

    fn is_overlay(&self, i: usize) -> bool {
        matches!(self.widgets[i].role, Role::Option | Role::MenuItem)
    }

    /// Indices of shown widgets in drawing order: overlays (open lists) last.
    pub fn draw_order(&self) -> Vec<usize> {
        let shown: Vec<usize> = (0..self.widgets.len()).filter(|&i| self.shown(i)).collect();
        let mut order: Vec<usize> = shown
            .iter()
            .copied()
            .filter(|&i| !self.is_overlay(i))
            .collect();
        order.extend(shown.iter().copied().filter(|&i| self.is_overlay(i)));
        order
    }

    fn root(&self, mut i: usize) -> usize {
        while let Some(p) = self.widgets[i].parent {
            i = p;
        }
        i
    }

    /// The topmost shown widget at (x, y) that can take input.
    pub fn hit(&self, x: i32, y: i32) -> Option<usize> {
        self.draw_order()
            .into_iter()
            .rev()
            .find(|&i| self.widgets[i].rect.contains(x, y))
            .filter(|&i| {
                self.modal
                    .is_none_or(|m| !self.shown(m) || self.root(i) == m)
            })
    }

    fn close_popups(&mut self, except: Option<usize>) {
        for (i, w) in self.widgets.iter_mut().enumerate() {
            if Some(i) != except {
                w.expanded = false;
            }
        }
    }

    /// The value a slider takes for a pointer at `x`.
    pub fn slider_value_at(rect: Rect, max: i32, x: i32) -> i32 {
        let (x0, x1) = slider_track(rect);
        if x1 <= x0 {
            return 0;
        }
        let t = (x - x0).clamp(0, x1 - x0);
        ((t * max * 2 + (x1 - x0)) / (2 * (x1 - x0))).clamp(0, max)
    }

    fn set_slider(&mut self, i: usize, v: i32) {
        let w = &mut self.widgets[i];
        w.value = v.clamp(0, w.max).to_string();
    }

    fn slider(&self, i: usize) -> i32 {
        self.widgets[i].value.parse().unwrap_or(0)
    }

    /// Applies one input; returns what the task logic must know about.
    pub fn apply(&mut self, input: &Input) -> Option<Event> {
        match input {
            Input::Move { x, y } => {
                self.cursor = (*x, *y);
                None
            }
            Input::Click { x, y } => {
                self.cursor = (*x, *y);
                self.click(*x, *y)
            }
            Input::DoubleClick { x, y } => {
                self.cursor = (*x, *y);
                self.click(*x, *y).or_else(|| self.click(*x, *y))
            }
            Input::Element(id) => {
                let i = (*id as usize).checked_sub(1)?;
                if i >= self.widgets.len() || !self.shown(i) {
                    return None;
                }
                let (x, y) = self.widgets[i].rect.center();
                self.cursor = (x, y);
                self.click(x, y)
            }
            Input::Drag { x, y, to_x, to_y } => {
                self.cursor = (*to_x, *to_y);
                let i = self.hit(*x, *y)?;
                if self.widgets[i].role == Role::Slider && !self.widgets[i].disabled {
                    self.focus = Some(i);
                    let v = Self::slider_value_at(self.widgets[i].rect, self.widgets[i].max, *to_x);
                    self.set_slider(i, v);
                }
                None
            }
            Input::Scroll { x, y, dx, dy } => {
                self.cursor = (*x, *y);
                let i = self.hit(*x, *y)?;
                if self.widgets[i].role == Role::Slider && !self.widgets[i].disabled {
                    let v = self.slider(i) + dx - dy;
                    self.set_slider(i, v);
                }
                None
            }
            Input::Type(text) => {
                let i = self.focus?;
                let w = &mut self.widgets[i];
                if w.role == Role::TextField && !w.disabled {
                    for c in text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ') {
                        if w.value.len() < FIELD_MAX {
                            w.value.push(c);
                        }
                    }
                }
                None
            }
            Input::Key { key, shift } => self.key(key, *shift),
            Input::Noop => None,
        }
    }

    fn click(&mut self, x: i32, y: i32) -> Option<Event> {
        let Some(i) = self.hit(x, y) else {
            self.close_popups(None);
            return None;
        };
        if self.widgets[i].disabled {
            return None;
        }
        let role = self.widgets[i].role;
        match role {
            Role::Dropdown | Role::Menu => {
                let open = !self.widgets[i].expanded;
                self.close_popups(None);
                self.widgets[i].expanded = open;
                if role == Role::Dropdown {
                    self.focus = Some(i);
                }
                None
            }
            Role::Option => {
                let owner = self.widgets[i].parent?;
                self.widgets[owner].value = self.widgets[i].name.clone();
                self.close_popups(None);
                None
            }
            Role::MenuItem => {
                self.close_popups(None);
                Some(Event::Pressed(i))
            }
            _ => {
                self.close_popups(None);
                match role {
                    Role::Button => {
                        self.focus = Some(i);
                        Some(Event::Pressed(i))
                    }
                    Role::Checkbox => {
                        self.focus = Some(i);
                        self.toggle(i);
                        None
                    }
                    Role::TextField => {
                        self.focus = Some(i);
                        None
                    }
                    Role::Slider => {
                        self.focus = Some(i);
                        let v = Self::slider_value_at(self.widgets[i].rect, self.widgets[i].max, x);
                        self.set_slider(i, v);
                        None
                    }
                    _ => None,
                }
            }
        }
    }

    fn toggle(&mut self, i: usize) {
        let w = &mut self.widgets[i];
        w.checked = Some(!w.checked.unwrap_or(false));
    }

    fn key(&mut self, key: &str, shift: bool) -> Option<Event> {
        match key {
            "Tab" => {
                let order: Vec<usize> = (0..self.widgets.len())
                    .filter(|&i| {
                        self.widgets[i].role.focusable()
                            && !self.widgets[i].disabled
                            && self.shown(i)
                            && self
                                .modal
                                .is_none_or(|m| !self.shown(m) || self.root(i) == m)
                    })
                    .collect();
                if order.is_empty() {
                    return None;
                }
                let pos = self.focus.and_then(|f| order.iter().position(|&i| i == f));
                let next = match (pos, shift) {
                    (None, false) => 0,
                    (None, true) => order.len() - 1,
                    (Some(p), false) => (p + 1) % order.len(),
                    (Some(p), true) => (p + order.len() - 1) % order.len(),
                };
                self.close_popups(None);
                self.focus = Some(order[next]);
                None
            }
            "Escape" => {
                self.close_popups(None);
                None
            }
            _ => {
                let i = self.focus?;
                if !self.shown(i) || self.widgets[i].disabled {
                    return None;
                }
                let role = self.widgets[i].role;
                match (role, key) {
                    (Role::TextField, "Backspace") => {
                        self.widgets[i].value.pop();
                        None
                    }
                    (Role::TextField, "Enter") => Some(Event::Submitted(i)),
                    (Role::Button, "Enter" | " " | "Space") => Some(Event::Pressed(i)),
                    (Role::Checkbox, " " | "Space" | "Enter") => {
                        self.toggle(i);
                        None
                    }
                    (Role::Slider, "ArrowRight" | "ArrowUp") => {
                        let v = self.slider(i) + 1;
                        self.set_slider(i, v);
                        None
                    }
                    (Role::Slider, "ArrowLeft" | "ArrowDown") => {
                        let v = self.slider(i) - 1;
                        self.set_slider(i, v);
                        None
                    }
                    (Role::Dropdown, "Enter" | " " | "Space") => {
                        let open = !self.widgets[i].expanded;
                        self.close_popups(None);
                        self.widgets[i].expanded = open;
                        None
                    }
                    (Role::Dropdown, "ArrowDown" | "ArrowUp") => {
                        let items: Vec<usize> = (0..self.widgets.len())
                            .filter(|&k| self.widgets[k].parent == Some(i))
                            .collect();
                        if items.is_empty() {
                            return None;
                        }
                        let cur = items
                            .iter()
                            .position(|&k| self.widgets[k].name == self.widgets[i].value);
                        let next = match (cur, key) {
                            (None, _) => 0,
                            (Some(p), "ArrowDown") => (p + 1).min(items.len() - 1),
                            (Some(p), _) => p.saturating_sub(1),
                        };
                        self.widgets[i].value = self.widgets[items[next]].name.clone();
                        None
                    }
                    _ => None,
                }
            }
        }
    }

    /// The element tree: shown widgets, parents first, ids are widget index + 1.
    pub fn tree(&self) -> Vec<Node> {
        let mut out = Vec::new();
        for (i, w) in self.widgets.iter().enumerate() {
            if !self.shown(i) {
                continue;
            }
            out.push(Node {
                id: i as u32 + 1,
                parent: w.parent.map(|p| p as u32 + 1),
                role: w.role.as_str().to_string(),
                name: w.name.clone(),
                value: if w.role == Role::Slider {
                    format!("{}/{}", w.value, w.max)
                } else {
                    w.value.clone()
                },
                bounds: w.rect,
                focused: self.focus == Some(i),
                checked: w.checked,
                disabled: w.disabled,
            });
        }
        out
    }

    /// Renders the screen as RGB bytes, row-major.
    pub fn render(&self, out: &mut Vec<u8>) {
        let mut c = Canvas {
            w: self.width,
            h: self.height,
            px: out,
            clip: Rect::new(0, 0, self.width, self.height),
        };
        c.px.clear();
        c.px.resize((self.width * self.height * 3) as usize, 0);
        c.fill(Rect::new(0, 0, self.width, self.height), DESKTOP);
        let hover = self.hit(self.cursor.0, self.cursor.1);
        for i in self.draw_order() {
            // Each widget draws only inside its own box.
            c.clip = self.widgets[i].rect;
            self.draw(&mut c, i, hover == Some(i));
        }
        c.clip = Rect::new(0, 0, self.width, self.height);
        draw_cursor(&mut c, self.cursor);
    }

    fn draw(&self, c: &mut Canvas, i: usize, hover: bool) {
        let w = &self.widgets[i];
        let r = w.rect;
        let focused = self.focus == Some(i);
        let ink = if w.disabled { MUTED } else { INK };
        let edge = if focused { FOCUS } else { BORDER };
        match w.role {
            Role::Window => {
                c.fill(r, WINDOW);
                c.fill(Rect::new(r.x, r.y, r.w, TITLE_H), TITLE);
                c.text(r.x + 3, r.y + 2, &w.name, WHITE);
                c.frame(r, INK);
            }
            Role::Label => c.text(r.x, r.y + (r.h - GLYPH_H) / 2, &w.name, ink),
            Role::Button => {
                c.fill(r, if hover { HOVER } else { FACE });
                c.frame(r, edge);
                if focused {
                    c.frame(r.inset(1), FOCUS);
                }
                let tw = text_width(&w.name);
                c.text(
                    r.x + (r.w - tw) / 2,
                    r.y + (r.h - GLYPH_H) / 2,
                    &w.name,
                    ink,
                );
            }
            Role::Checkbox => {
                let b = Rect::new(r.x, r.y + (r.h - 7) / 2, 7, 7);
                c.fill(b, WHITE);
                c.frame(b, edge);
                if w.checked == Some(true) {
                    c.fill(b.inset(2), INK);
                }
                c.text(r.x + 10, r.y + (r.h - GLYPH_H) / 2, &w.name, ink);
            }
            Role::TextField => {
                c.fill(r, WHITE);
                c.frame(r, edge);
                let x = r.x + 3;
                c.text(x, r.y + (r.h - GLYPH_H) / 2, &w.value, ink);
                if focused {
                    let cx = x + text_width(&w.value) + 1;
                    c.fill(Rect::new(cx, r.y + 2, 1, r.h - 4), INK);
                }
            }
            Role::Dropdown => {
                c.fill(r, if hover { HOVER } else { WHITE });
                c.frame(r, edge);
                let shown = if w.value.is_empty() { "-" } else { &w.value };
                c.text(r.x + 3, r.y + (r.h - GLYPH_H) / 2, shown, ink);
                // A small down-pointing triangle.
                let ax = r.x + r.w - 8;
                let ay = r.y + r.h / 2 - 1;
                for k in 0..3 {
                    c.fill(Rect::new(ax + k, ay + k, 5 - 2 * k, 1), ink);
                }
            }
            Role::Option | Role::MenuItem => {
                let owner = w.parent.map(|p| &self.widgets[p]);
                let chosen = owner.is_some_and(|o| o.role == Role::Dropdown && o.value == w.name);
                c.fill(
                    r,
                    if hover {
                        SELECT
                    } else if chosen {
                        HOVER
                    } else {
                        WHITE
                    },
                );
                c.frame(r, BORDER);
                c.text(r.x + 3, r.y + 2, &w.name, ink);
            }
            Role::Slider => {
                let (x0, x1) = slider_track(r);
                let cy = r.y + r.h / 2;
                c.frame(r, if focused { FOCUS } else { WINDOW });
                c.fill(Rect::new(x0, cy - 1, x1 - x0 + 1, 2), BORDER);
                let v = self.slider(i);
                let kx = x0 + if w.max > 0 { v * (x1 - x0) / w.max } else { 0 };
                c.fill(
                    Rect::new(kx - 2, r.y + 1, 5, r.h - 2),
                    if hover { FOCUS } else { INK },
                );
            }
            Role::MenuBar => {
                c.fill(r, FACE);
                c.fill(Rect::new(r.x, r.y + r.h - 1, r.w, 1), BORDER);
            }
            Role::Menu => {
                if w.expanded || hover {
                    c.fill(r, SELECT);
                }
                c.text(r.x + 3, r.y + 2, &w.name, ink);
            }
        }
    }
}

/// The x range of a slider's track inside its box.
pub fn slider_track(r: Rect) -> (i32, i32) {
    (r.x + 3, r.x + r.w - 4)
}

struct Canvas<'a> {
    w: i32,
    h: i32,
    px: &'a mut Vec<u8>,
    clip: Rect,
}

impl Canvas<'_> {
    fn fill(&mut self, r: Rect, color: [u8; 3]) {
        let x0 = r.x.max(self.clip.x).max(0);
        let y0 = r.y.max(self.clip.y).max(0);
        let x1 = (r.x + r.w).min(self.clip.x + self.clip.w).min(self.w);
        let y1 = (r.y + r.h).min(self.clip.y + self.clip.h).min(self.h);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        // Paint the first row pixel by pixel, then copy it down: rendering is
        // most of a step's cost, and large fills dominate it.
        let (a, b) = (x0 as usize * 3, x1 as usize * 3);
        let stride = self.w as usize * 3;
        let first = y0 as usize * stride;
        for px in self.px[first + a..first + b].chunks_exact_mut(3) {
            px.copy_from_slice(&color);
        }
        for y in y0 + 1..y1 {
            let row = y as usize * stride;
            self.px.copy_within(first + a..first + b, row + a);
        }
    }

    fn frame(&mut self, r: Rect, color: [u8; 3]) {
        self.fill(Rect::new(r.x, r.y, r.w, 1), color);
        self.fill(Rect::new(r.x, r.y + r.h - 1, r.w, 1), color);
        self.fill(Rect::new(r.x, r.y, 1, r.h), color);
        self.fill(Rect::new(r.x + r.w - 1, r.y, 1, r.h), color);
    }

    fn text(&mut self, x: i32, y: i32, text: &str, color: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let gx = x + k as i32 * ADVANCE;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        self.fill(Rect::new(gx + col, y + row as i32, 1, 1), color);
                    }
                }
            }
        }
    }
}

/// An arrow pointer, 6 pixels wide and 8 tall, tip at (x, y).
fn draw_cursor(c: &mut Canvas, (x, y): (i32, i32)) {
    const SHAPE: [&[u8]; 8] = [
        b"X     ", b"XX    ", b"X.X   ", b"X..X  ", b"X...X ", b"X..XXX", b"X.X   ", b"XX    ",
    ];
    for (dy, row) in SHAPE.iter().enumerate() {
        for (dx, p) in row.iter().enumerate() {
            let color = match p {
                b'X' => INK,
                b'.' => WHITE,
                _ => continue,
            };
            c.fill(Rect::new(x + dx as i32, y + dy as i32, 1, 1), color);
        }
    }
}
