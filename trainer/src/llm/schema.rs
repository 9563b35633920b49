//! JSON-schema-constrained decoding: whether a text can still grow into a
//! JSON document that a request's response format accepts. The backend asks
//! this of each candidate token, so the model only ever writes such a
//! document (and ends its turn only when the document is complete).
//!
//! The schema subset is the one agents send: `type` (`object` with
//! `properties` and `required`, `array` with `items`, `string`, `integer`,
//! `number`, `boolean`, `null`, or a list of these), `enum`, `const`,
//! `anyOf`/`oneOf`; any other keyword is ignored (it constrains nothing).
//! An object's properties come in the schema's order; ones it does not name
//! are refused. Whitespace between tokens is allowed, at most four
//! characters at a time.

use serde_json::Value;

/// Nesting deeper than this is refused (in schemas and in documents).
const MAX_DEPTH: usize = 64;
/// Whitespace characters allowed in a row.
const MAX_WS: usize = 4;

/// A compiled schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Schema {
    Any,
    Null,
    Bool,
    Integer,
    Number,
    String,
    /// The JSON texts of the allowed values (`enum`, `const`).
    Literals(Vec<String>),
    Array(Box<Schema>),
    Object(Vec<Prop>),
    AnyOf(Vec<Schema>),
}

/// An object's property: its key as JSON text (quoted), its schema, and
/// whether it is required.
#[derive(Clone, Debug, PartialEq)]
pub struct Prop {
    key: String,
    schema: Schema,
    required: bool,
}

/// Why a response format is not a usable schema.
#[derive(Debug, thiserror::Error)]
#[error("the response format is not a JSON schema: {0}")]
pub struct SchemaError(String);

impl Schema {
    /// A schema from its JSON text.
    pub fn parse(text: &str) -> Result<Schema, SchemaError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SchemaError(e.to_string()))?;
        Schema::from_value(&v, 0)
    }

    fn from_value(v: &Value, depth: usize) -> Result<Schema, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!("nested more than {MAX_DEPTH} deep")));
        }
        let Some(o) = v.as_object() else {
            return match v {
                Value::Bool(true) => Ok(Schema::Any),
                _ => Err(SchemaError(format!("expected an object, found {v}"))),
            };
        };
        if let Some(c) = o.get("const") {
            return Ok(Schema::Literals(vec![c.to_string()]));
        }
        if let Some(e) = o.get("enum") {
            let values = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| SchemaError("`enum` must be a non-empty list".into()))?;
            return Ok(Schema::Literals(
                values.iter().map(Value::to_string).collect(),
            ));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = o.get(key) {
                let alts = alts
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| SchemaError(format!("`{key}` must be a non-empty list")))?;
                return alts
                    .iter()
                    .map(|a| Schema::from_value(a, depth + 1))
                    .collect::<Result<_, _>>()
                    .map(Schema::AnyOf);
            }
        }
        match o.get("type") {
            None => Ok(Schema::Any),
            Some(Value::String(t)) => Schema::typed(t, o, depth),
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| match t.as_str() {
                    Some(t) => Schema::typed(t, o, depth),
                    None => Err(SchemaError(format!("`type` lists {t}"))),
                })
                .collect::<Result<_, _>>()
                .map(Schema::AnyOf),
            Some(t) => Err(SchemaError(format!("`type` is {t}"))),
        }
    }

    fn typed(
        t: &str,
        o: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<Schema, SchemaError> {
        Ok(match t {
            "null" => Schema::Null,
            "boolean" => Schema::Bool,
            "integer" => Schema::Integer,
            "number" => Schema::Number,
            "string" => Schema::String,
            "array" => Schema::Array(Box::new(match o.get("items") {
                Some(items) => Schema::from_value(items, depth + 1)?,
                None => Schema::Any,
            })),
            "object" => {
                let Some(props) = o.get("properties").and_then(Value::as_object) else {
                    return Ok(Schema::Any);
                };
                let required: Vec<&str> = o
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut out = Vec::new();
                for (k, s) in props {
                    out.push(Prop {
                        key: Value::String(k.clone()).to_string(),
                        schema: Schema::from_value(s, depth + 1)?,
                        required: required.contains(&k.as_str()),
                    });
                }
                Schema::Object(out)
            }
            other => return Err(SchemaError(format!("unknown type `{other}`"))),
        })
    }

    /// Whether `text` can still become (or already is) a document this
    /// schema accepts.
    pub fn admits_prefix(&self, text: &str) -> bool {
        Parser {
            s: text.as_bytes(),
            closed: false,
        }
        .document(self)
    }

    /// Whether `text` is a complete document this schema accepts.
    pub fn accepts(&self, text: &str) -> bool {
        Parser {
            s: text.as_bytes(),
            closed: true,
        }
        .document(self)
    }
}

/// How a part of the text fits: up to a position, or cut off by the end of
/// the text while still fitting, or not at all.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fit {
    Done(usize),
    Partial,
    No,
}

struct Parser<'a> {
    s: &'a [u8],
    /// The text is all there is (a complete document is asked for).
    closed: bool,
}

impl Parser<'_> {
    fn document(&self, schema: &Schema) -> bool {
        match self.value(schema, 0, 0) {
            Fit::Done(j) => match self.ws(j) {
                Some(k) => k == self.s.len(),
                None => false,
            },
            Fit::Partial => !self.closed,
            Fit::No => false,
        }
    }

    /// What the end of the text means inside an unfinished part.
    fn cut(&self) -> Fit {
        if self.closed { Fit::No } else { Fit::Partial }
    }

    /// Skips whitespace; `None` when there is too much of it.
    fn ws(&self, mut i: usize) -> Option<usize> {
        let start = i;
        while i < self.s.len() && matches!(self.s[i], b' ' | b'\n' | b'\t' | b'\r') {
            i += 1;
        }
        (i - start <= MAX_WS).then_some(i)
    }

    fn value(&self, schema: &Schema, i: usize, depth: usize) -> Fit {
        if depth > MAX_DEPTH {
            return Fit::No;
        }
        let Some(i) = self.ws(i) else {
            return Fit::No;
        };
        if i >= self.s.len() {
            return self.cut();
        }
        match schema {
            Schema::Any => self.any(i, depth),
            Schema::Null => self.word(i, b"null"),
            Schema::Bool => longest([self.word(i, b"true"), self.word(i, b"false")]),
            Schema::Integer => self.number(i, true),
            Schema::Number => self.number(i, false),
            Schema::String => self.string(i),
            Schema::Literals(ls) => longest(ls.iter().map(|l| self.word(i, l.as_bytes()))),
            Schema::Array(item) => self.array(i, item, depth),
            Schema::Object(props) => self.object(i, props, depth),
            Schema::AnyOf(alts) => longest(alts.iter().map(|a| self.value(a, i, depth + 1))),
        }
    }

    fn word(&self, i: usize, w: &[u8]) -> Fit {
        let rest = &self.s[i..];
        if rest.len() >= w.len() {
            if &rest[..w.len()] == w {
                Fit::Done(i + w.len())
            } else {
                Fit::No
            }
        } else if w.starts_with(rest) {
            self.cut()
        } else {
            Fit::No
        }
    }

    fn number(&self, mut i: usize, integer: bool) -> Fit {
        let s = self.s;
        let digits = |mut i: usize| {
            let start = i;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            (i, i - start)
        };
        // The end of the text after a complete number ends it.
        let end = |complete: bool| {
            if !self.closed {
                Fit::Partial
            } else if complete {
                Fit::Done(s.len())
            } else {
                Fit::No
            }
        };
        if s[i] == b'-' {
            i += 1;
            if i >= s.len() {
                return end(false);
            }
        }
        if s[i] == b'0' {
            i += 1;
        } else if s[i].is_ascii_digit() {
            let (j, n) = digits(i);
            if n > 18 {
                return Fit::No;
            }
            i = j;
        } else {
            return Fit::No;
        }
        if i >= s.len() {
            return end(true);
        }
        if integer {
            return if s[i].is_ascii_digit() {
                Fit::No
            } else {
                Fit::Done(i)
            };
        }
        if s[i] == b'.' {
            let (j, n) = digits(i + 1);
            if j >= s.len() {
                return end(n > 0);
            }
            if n == 0 {
                return Fit::No;
            }
            i = j;
        }
        if s[i] == b'e' || s[i] == b'E' {
            i += 1;
            if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
                i += 1;
            }
            let (j, n) = digits(i);
            if j >= s.len() {
                return end(n > 0);
            }
            if n == 0 {
                return Fit::No;
            }
            i = j;
        }
        Fit::Done(i)
    }

    fn string(&self, i: usize) -> Fit {
        let s = self.s;
        if s[i] != b'"' {
            return Fit::No;
        }
        let mut j = i + 1;
        while j < s.len() {
            match s[j] {
                b'"' => return Fit::Done(j + 1),
                b'\\' => {
                    let Some(&e) = s.get(j + 1) else {
                        return self.cut();
                    };
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                        b'u' => {
                            for k in 0..4 {
                                match s.get(j + 2 + k) {
                                    None => return self.cut(),
                                    Some(h) if h.is_ascii_hexdigit() => {}
                                    Some(_) => return Fit::No,
                                }
                            }
                            j += 6;
                        }
                        _ => return Fit::No,
                    }
                }
                c if c < 0x20 => return Fit::No,
                _ => j += 1,
            }
        }
        self.cut()
    }

    /// `[` items `]`, each item by `item`.
    fn array(&self, i: usize, item: &Schema, depth: usize) -> Fit {
        if self.s[i] != b'[' {
            return Fit::No;
        }
        let Some(mut j) = self.ws(i + 1) else {
            return Fit::No;
        };
        if j >= self.s.len() {
            return self.cut();
        }
        if self.s[j] == b']' {
            return Fit::Done(j + 1);
        }
        loop {
            j = match self.value(item, j, depth + 1) {
                Fit::Done(k) => k,
                other => return other,
            };
            let Some(k) = self.ws(j) else {
                return Fit::No;
            };
            match self.s.get(k) {
                None => return self.cut(),
                Some(b']') => return Fit::Done(k + 1),
                Some(b',') => j = k + 1,
                Some(_) => return Fit::No,
            }
        }
    }

    /// `{` the properties, in order `}`.
    fn object(&self, i: usize, props: &[Prop], depth: usize) -> Fit {
        if self.s[i] != b'{' {
            return Fit::No;
        }
        let mut next = 0;
        let mut j = i + 1;
        let mut first = true;
        loop {
            let Some(k) = self.ws(j) else {
                return Fit::No;
            };
            let Some(&c) = self.s.get(k) else {
                return self.cut();
            };
            let may_close = props[next..].iter().all(|p| !p.required);
            if c == b'}' {
                return if may_close { Fit::Done(k + 1) } else { Fit::No };
            }
            j = k;
            if !first {
                // A comma needs a property left to write.
                if c != b',' || next >= props.len() {
                    return Fit::No;
                }
                j = match self.ws(k + 1) {
                    Some(j) => j,
                    None => return Fit::No,
                };
                if j >= self.s.len() {
                    return self.cut();
                }
            }
            first = false;
            // The keys that may come next: the optional ones up to the next
            // required one, and that one.
            let end = props[next..]
                .iter()
                .position(|p| p.required)
                .map_or(props.len(), |r| next + r + 1);
            let candidates = &props[next..end];
            let key_end = match self.string(j) {
                Fit::Done(e) => e,
                Fit::Partial => {
                    let typed = &self.s[j..];
                    return if candidates
                        .iter()
                        .any(|p| p.key.as_bytes().starts_with(typed))
                    {
                        Fit::Partial
                    } else {
                        Fit::No
                    };
                }
                Fit::No => return Fit::No,
            };
            let key = &self.s[j..key_end];
            let Some(found) = candidates.iter().position(|p| p.key.as_bytes() == key) else {
                return Fit::No;
            };
            let prop = &candidates[found];
            next += found + 1;
            let k = match self.colon(key_end) {
                Ok(k) => k,
                Err(fit) => return fit,
            };
            j = match self.value(&prop.schema, k, depth + 1) {
                Fit::Done(e) => e,
                other => return other,
            };
        }
    }

    /// The `:` after an object's key ending at `i`: the position after it,
    /// or how the text fits when it is not there.
    fn colon(&self, i: usize) -> Result<usize, Fit> {
        let k = self.ws(i).ok_or(Fit::No)?;
        match self.s.get(k) {
            None => Err(self.cut()),
            Some(b':') => Ok(k + 1),
            Some(_) => Err(Fit::No),
        }
    }

    /// Any JSON value.
    fn any(&self, i: usize, depth: usize) -> Fit {
        match self.s[i] {
            b'{' => self.any_object(i, depth),
            b'[' => self.array(i, &Schema::Any, depth),
            b'"' => self.string(i),
            b't' => self.word(i, b"true"),
            b'f' => self.word(i, b"false"),
            b'n' => self.word(i, b"null"),
            b'-' | b'0'..=b'9' => self.number(i, false),
            _ => Fit::No,
        }
    }

    fn any_object(&self, i: usize, depth: usize) -> Fit {
        let Some(mut j) = self.ws(i + 1) else {
            return Fit::No;
        };
        if j >= self.s.len() {
            return self.cut();
        }
        if self.s[j] == b'}' {
            return Fit::Done(j + 1);
        }
        loop {
            let key_end = match self.string(j) {
                Fit::Done(e) => e,
                other => return other,
            };
            let k = match self.colon(key_end) {
                Ok(k) => k,
                Err(fit) => return fit,
            };
            j = match self.value(&Schema::Any, k, depth + 1) {
                Fit::Done(e) => e,
                other => return other,
            };
            let Some(k) = self.ws(j) else {
                return Fit::No;
            };
            match self.s.get(k) {
                None => return self.cut(),
                Some(b'}') => return Fit::Done(k + 1),
                Some(b',') => {}
                Some(_) => return Fit::No,
            }
            j = match self.ws(k + 1) {
                Some(j) if j < self.s.len() => j,
                Some(_) => return self.cut(),
                None => return Fit::No,
            };
        }
    }
}

/// Of several ways to read the same text: the longest complete one, else
/// an unfinished one, else none.
fn longest(fits: impl IntoIterator<Item = Fit>) -> Fit {
    let mut best = Fit::No;
    for f in fits {
        best = match (best, f) {
            (Fit::Done(a), Fit::Done(b)) => Fit::Done(a.max(b)),
            (Fit::Done(a), _) | (_, Fit::Done(a)) => Fit::Done(a),
            (Fit::Partial, _) | (_, Fit::Partial) => Fit::Partial,
            _ => Fit::No,
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOVE: &str = r#"{"type":"object","properties":{"move":{"type":"string","enum":["up","right","down","left"]}},"required":["move"]}"#;

    #[test]
    fn prefixes_of_an_accepted_document_are_admitted() {
        let s = Schema::parse(MOVE).expect("schema");
        let doc = r#"{"move": "left"}"#;
        for end in 0..=doc.len() {
            assert!(s.admits_prefix(&doc[..end]), "{:?}", &doc[..end]);
        }
        assert!(s.accepts(doc));
        assert!(!s.accepts(r#"{"move": "lef"#));
        for bad in [
            r#"{"mov": "up"}"#,
            r#"{"move": "u"}"#,
            r#"{"move": "north"#,
            "x",
            r#"{"move": "up", "x": 1}"#,
            r#"{"move":"up"}}"#,
            "{}",
        ] {
            assert!(!s.accepts(bad), "{bad}");
        }
        assert!(!s.admits_prefix(r#"{"move": "n"#));
        assert!(!s.admits_prefix(r#"{"x"#));
        assert!(!s.admits_prefix(r#"{"move": "up"}  x"#));
        assert!(!s.admits_prefix(r#"{"move": "up","#));
        assert!(!s.admits_prefix("{\"move\": \"up\",\n"));
        // Whitespace is bounded.
        assert!(!s.admits_prefix("{          "));
    }

    #[test]
    fn the_agents_schemas_and_the_common_types() {
        let desktop = r#"{"type":"object","properties":{"action":{"type":"string","enum":["click","type"]},"element":{"type":"integer"},"text":{"type":"string"}},"required":["action","element"]}"#;
        let s = Schema::parse(desktop).expect("schema");
        assert!(s.accepts(r#"{"action":"click","element":12}"#));
        assert!(s.accepts(r#"{"action":"type","element":3,"text":"hi \"you\""}"#));
        assert!(!s.accepts(r#"{"action":"type","element":3.5}"#));
        assert!(!s.accepts(r#"{"action":"click"}"#));
        assert!(s.admits_prefix(r#"{"action":"click","element":1"#));
        let any = Schema::parse(r#"{"type":"array","items":{"type":["number","null"]}}"#)
            .expect("schema");
        assert!(any.accepts("[1, -2.5e3, null]"));
        assert!(!any.accepts("[1, \"a\"]"));
        assert!(any.admits_prefix("[1, -"));
        assert!(!any.accepts("[1, -"));
        let free = Schema::parse("{}").expect("schema");
        assert!(free.accepts(r#"{"a": [true, {"b": null}], "c": "d"}"#));
        assert!(!free.accepts(r#"{"a": }"#));
        assert!(Schema::parse("[1]").is_err());
        assert!(Schema::parse(r#"{"type":"thing"}"#).is_err());
        assert!(Schema::parse("not json").is_err());
    }

    #[test]
    fn deep_documents_are_refused_not_overflowed() {
        let free = Schema::parse("{}").expect("schema");
        let deep = "[".repeat(100_000);
        assert!(!free.admits_prefix(&deep));
    }
}
