//! A breakpoint or watch expression, compiled and evaluated against a
//! frame's variables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ludus_debugger::expr::{Context, Expr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = Expr::compile(text) else {
        return;
    };
    let mut context = Context::default();
    context.add_variable_from_value("step", 3i64);
    context.add_variable_from_value("reward", 0.5f64);
    context.add_variable_from_value("action", "left");
    let _ = expr.eval(&context);
});
