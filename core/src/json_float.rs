//! Floats in JSON, NaN and infinities included. JSON has no such numbers
//! and `serde_json` writes them as `null`, which then cannot be read back
//! into a float: a suite baseline with one NaN return could not be loaded.
//! With `#[serde(with = "ludus_core::json_float")]` a finite value stays a
//! JSON number and a non-finite one is the string `"NaN"`, `"inf"` or
//! `"-inf"` (what Python's `float()` reads); `null`, as older files hold
//! for a NaN, reads back as NaN.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    match text(*v) {
        Some(t) => s.serialize_str(t),
        None => s.serialize_f64(*v),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Repr::deserialize(d)?.float()
}

/// The text of a non-finite value, `None` for a finite one.
pub fn text(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("inf")
    } else if v == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

/// How a float may appear in JSON.
#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Text(String),
    Null(()),
}

impl Repr {
    fn float<E: serde::de::Error>(self) -> Result<f64, E> {
        match self {
            Repr::Number(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(E::custom(format!(
                    "`{t}` is not a number (a float, or \"NaN\", \"inf\", \"-inf\")"
                ))),
            },
        }
    }
}

/// The same for a list of floats: `#[serde(with = "ludus_core::json_float::vec")]`.
pub mod vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Repr, text};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            match text(*x) {
                Some(t) => seq.serialize_element(t)?,
                None => seq.serialize_element(x)?,
            }
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Repr>::deserialize(d)?
            .into_iter()
            .map(Repr::float)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        x: f64,
        #[serde(with = "super::vec")]
        v: Vec<f64>,
    }

    #[test]
    fn non_finite_values_survive_json() {
        let t = T {
            x: f64::NAN,
            v: vec![1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.0],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"x":"NaN","v":[1.5,"inf","-inf","NaN",-0.0]}"#);
        let back: T = serde_json::from_str(&json).unwrap();
        assert!(back.x.is_nan());
        assert_eq!(back.v[..3], [1.5, f64::INFINITY, f64::NEG_INFINITY]);
        assert!(back.v[3].is_nan());
        assert!(back.v[4] == 0.0 && back.v[4].is_sign_negative());
        // What serde_json wrote for a NaN before: null.
        let old: T = serde_json::from_str(r#"{"x":null,"v":[null,2]}"#).unwrap();
        assert!(old.x.is_nan() && old.v[0].is_nan() && old.v[1] == 2.0);
        let bad = serde_json::from_str::<T>(r#"{"x":"lots","v":[]}"#).unwrap_err();
        assert!(bad.to_string().contains("`lots` is not a number"), "{bad}");
    }
}
