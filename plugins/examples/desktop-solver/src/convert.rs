//! Conversions between the contract's types and desktop-kit's, shared by the
//! desktop agents (included with `#[path]`, since each agent is its own cdylib).

use desktop_kit::{Input, Options};
use ludus_sdk::*;

/// The element tree of an observation, in desktop-kit's terms.
pub fn tree(observation: &Observation) -> Vec<desktop_kit::Node> {
    let Some(Value::Tree(elements)) = part(observation, "tree") else {
        return Vec::new();
    };
    elements
        .iter()
        .map(|e| desktop_kit::Node {
            id: e.id,
            parent: e.parent,
            role: e.role.clone(),
            name: e.name.clone(),
            value: e.value.clone(),
            bounds: desktop_kit::Rect::new(
                e.bounds.x,
                e.bounds.y,
                e.bounds.width as i32,
                e.bounds.height as i32,
            ),
            focused: e.focused,
            checked: e.checked,
            disabled: e.disabled,
        })
        .collect()
}

/// The contract's action for a desktop input.
pub fn action(input: Input) -> Action {
    let pointer = |kind, x, y, to_x, to_y, dx, dy| {
        Action::Pointer(PointerAction {
            kind,
            button: MouseButton::Left,
            x,
            y,
            to_x,
            to_y,
            dx,
            dy,
        })
    };
    match input {
        Input::Move { x, y } => pointer(PointerKind::Move, x, y, 0, 0, 0, 0),
        Input::Click { x, y } => pointer(PointerKind::Click, x, y, 0, 0, 0, 0),
        Input::DoubleClick { x, y } => pointer(PointerKind::DoubleClick, x, y, 0, 0, 0, 0),
        Input::Drag { x, y, to_x, to_y } => pointer(PointerKind::Drag, x, y, to_x, to_y, 0, 0),
        Input::Scroll { x, y, dx, dy } => pointer(PointerKind::Scroll, x, y, 0, 0, dx, dy),
        Input::Type(t) => Action::TypeText(t),
        Input::Key { key, shift } => Action::Key(KeyPress {
            key,
            ctrl: false,
            alt: false,
            shift,
        }),
        Input::Element(id) => Action::Element(id),
        Input::Noop => Action::Noop,
    }
}

pub fn parse_options(config: &str) -> Result<Options, String> {
    let mut options = Options::default();
    for (k, v) in parse_config(config)? {
        match (k.as_str(), v.as_str()) {
            ("element_actions", "1" | "true") => options.element_actions = true,
            ("element_actions", "0" | "false") => options.element_actions = false,
            _ => {
                return Err(format!(
                    "unknown config `{k}={v}` (known: element_actions=0|1)"
                ));
            }
        }
    }
    Ok(options)
}
