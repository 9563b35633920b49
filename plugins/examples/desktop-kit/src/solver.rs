//! A scripted solver that reads only the instruction and the element tree.
//! It is a policy without state: given the goal and the tree now, the next input.

use crate::tasks::{FILENAME, FORMAT, Goal, SUBMIT};
use crate::ui::{Input, Node, slider_track};

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Click by element id instead of by pixel coordinates.
    pub element_actions: bool,
    /// The menu to open first when looking for a hidden menu item.
    pub menu_hint: Option<String>,
}

fn find<'a>(tree: &'a [Node], role: &str, name: &str) -> Option<&'a Node> {
    tree.iter().find(|n| n.role == role && n.name == name)
}

fn click(n: &Node, o: &Options) -> Input {
    if o.element_actions {
        Input::Element(n.id)
    } else {
        let (x, y) = n.bounds.center();
        Input::Click { x, y }
    }
}

fn key(k: &str) -> Input {
    Input::Key {
        key: k.to_string(),
        shift: false,
    }
}

/// The next input to make `field` hold `text`, or None when it does.
fn fill(tree: &[Node], field: &str, text: &str, o: &Options) -> Option<Input> {
    let n = find(tree, "textfield", field)?;
    if n.value == text {
        None
    } else if !n.focused {
        Some(click(n, o))
    } else if !text.starts_with(&n.value) {
        Some(key("Backspace"))
    } else {
        Some(Input::Type(text[n.value.len()..].to_string()))
    }
}

fn choose(tree: &[Node], field: &str, option: &str, o: &Options) -> Option<Input> {
    let dd = find(tree, "combobox", field)?;
    if dd.value == option {
        return None;
    }
    match tree
        .iter()
        .find(|n| n.parent == Some(dd.id) && n.name == option)
    {
        Some(item) => Some(click(item, o)),
        None => Some(click(dd, o)),
    }
}

fn slide(tree: &[Node], field: &str, value: i32) -> Option<Input> {
    let s = find(tree, "slider", field)?;
    let (now, max) = s.value.split_once('/')?;
    let (now, max): (i32, i32) = (now.parse().ok()?, max.parse().ok()?);
    if now == value {
        return None;
    }
    if s.focused && (now - value).abs() <= 3 {
        return Some(key(if now < value {
            "ArrowRight"
        } else {
            "ArrowLeft"
        }));
    }
    let (x0, x1) = slider_track(s.bounds);
    let to_x = x0 + (value * (x1 - x0) * 2 + max.max(1)) / (2 * max.max(1));
    let (x, y) = s.bounds.center();
    Some(Input::Drag {
        x,
        y,
        to_x,
        to_y: y,
    })
}

/// The menu whose open list shows `item` now, if any.
pub fn menu_of(tree: &[Node], item: &str) -> Option<String> {
    let n = find(tree, "menuitem", item)?;
    tree.iter()
        .find(|m| Some(m.id) == n.parent)
        .map(|m| m.name.clone())
}

/// Opens menus one after another (the hinted one first) until `item` shows.
fn use_menu_item(tree: &[Node], item: &str, o: &Options) -> Option<Input> {
    if let Some(n) = find(tree, "menuitem", item) {
        return Some(if n.disabled {
            key("Escape")
        } else {
            click(n, o)
        });
    }
    let menus: Vec<&Node> = tree.iter().filter(|n| n.role == "menu").collect();
    if menus.is_empty() {
        return None;
    }
    let open = menus
        .iter()
        .position(|m| tree.iter().any(|n| n.parent == Some(m.id)));
    let next = match open {
        Some(k) => (k + 1) % menus.len(),
        None => o
            .menu_hint
            .as_deref()
            .and_then(|h| menus.iter().position(|m| m.name == h))
            .unwrap_or(0),
    };
    Some(click(menus[next], o))
}

fn press(tree: &[Node], name: &str, o: &Options) -> Input {
    match find(tree, "button", name) {
        Some(b) => click(b, o),
        None => Input::Noop,
    }
}

/// The next input towards `goal`, from the element tree alone.
pub fn next_input(goal: &Goal, tree: &[Node], o: &Options) -> Input {
    match goal {
        Goal::ClickButton { label } => press(tree, label, o),
        Goal::ClickRandom => match tree.iter().find(|n| n.role == "button") {
            Some(b) => click(b, o),
            None => Input::Noop,
        },
        Goal::Checkboxes { names } => tree
            .iter()
            .filter(|n| n.role == "checkbox")
            .find(|n| (n.checked == Some(true)) != names.contains(&n.name))
            .map(|n| click(n, o))
            .unwrap_or_else(|| press(tree, SUBMIT, o)),
        Goal::TypeField { field, text } => {
            fill(tree, field, text, o).unwrap_or_else(|| press(tree, SUBMIT, o))
        }
        Goal::Dropdown { field, option } => {
            choose(tree, field, option, o).unwrap_or_else(|| press(tree, SUBMIT, o))
        }
        Goal::Slider { field, value } => {
            slide(tree, field, *value).unwrap_or_else(|| press(tree, SUBMIT, o))
        }
        Goal::Workflow(w) => {
            let dialog = tree
                .iter()
                .any(|n| n.role == "window" && n.name == "Export");
            if dialog {
                return fill(tree, FILENAME, &w.filename, o)
                    .or_else(|| choose(tree, FORMAT, &w.format, o))
                    .unwrap_or_else(|| press(tree, &w.confirm, o));
            }
            for (f, t) in &w.fields {
                if let Some(i) = fill(tree, f, t, o) {
                    return i;
                }
            }
            if let Some(b) = find(tree, "checkbox", &w.tick)
                && b.checked != Some(true)
            {
                return click(b, o);
            }
            choose(tree, &w.dropdown, &w.option, o)
                .or_else(|| use_menu_item(tree, &w.item, o))
                .unwrap_or(Input::Noop)
        }
    }
}
